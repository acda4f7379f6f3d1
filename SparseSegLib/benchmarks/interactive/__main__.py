"""``python -m SparseSegLib.benchmarks.interactive``: see :mod:`.cli`."""

from .cli import main

raise SystemExit(main())
