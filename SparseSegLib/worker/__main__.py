"""``python -m SparseSegLib.worker [--resume] [--echo] JOBDIR``."""

import sys

from .entry import main

sys.exit(main())
