"""SparseSeg engine: segment 3D medical scans from sparse annotation.

Importing this package is cheap and never imports torch: the Slicer GUI process uses the data model,
IO and job client from here, while training lives in :mod:`SparseSegLib.engine` (torch, MONAI) and
runs in a worker process.
"""

__version__ = "0.1.0"
