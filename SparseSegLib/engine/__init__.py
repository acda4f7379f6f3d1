"""Training and inference (torch + MONAI). Imported only by the worker and the command line, never by
the Slicer GUI process."""
