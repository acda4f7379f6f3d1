"""SparseSeg engine: segment 3D medical scans from sparse annotation.

Importing this package is cheap and never imports torch: the Slicer GUI process uses the data model,
IO and job client from here, while training lives in :mod:`SparseSegLib.engine` (torch, MONAI) and
runs in a worker process.
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads that spin while waiting for work turn a busy CPU (other jobs, a second worker, the
# Slicer GUI) into a stall: on this project's shared 2-core machine a 2D training step took 6.1 s with
# the default policy and 0.29 s with passive waiting (python -m SparseSegLib.benchmarks.threads). The
# policy is read once when torch loads libgomp, so it is set here, before anything imports torch;
# a value the user already set wins. Child processes (the worker) inherit it.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
