"""The 3D Slicer side of SparseSeg: MRML nodes in, a background worker, rounds back into the scene.

Everything here runs inside the Slicer GUI process (or a headless MRML scene from the ``slicer-core``
wheel in tests) and needs only numpy, SimpleITK and Slicer's ``slicer``/``vtk`` modules: never torch,
never Qt. The Qt widget (``SparseSeg/SparseSeg.py``) calls :class:`Session` from a timer.

* :mod:`.mrml`: volume / segmentation / ROI nodes <-> arrays with exact geometry (RAS <-> LPS);
* :mod:`.session`: :class:`Session`: export a job, start the worker, poll without blocking, import
  each round into a result segmentation, cancel, continue after corrections, accept;
* :mod:`.settings`: the choices the module offers and :class:`SessionSettings`;
* :mod:`.tasks`: other child processes the module starts: the dependency probe, model export
  (:mod:`SparseSegLib.worker.model_export`, on the worker's side: it imports torch) and "apply model to a volume";
* :mod:`.controller`: what the module's buttons start (probe, session, Save, Apply), advanced by one timer
  without ever blocking the GUI thread;
* :mod:`.benchmark`: main-thread time of one poll and one round import (``python -m
  SparseSegLib.session.benchmark``).

The module is imported lazily so ``import SparseSegLib.session`` works without Slicer installed.
"""

from __future__ import annotations

__all__ = ["Session", "SessionSettings", "METHOD_CHOICES", "ROUND_TAG"]


def __getattr__(name):  # pragma: no cover - thin lazy re-export
    if name in __all__:
        from . import session

        return getattr(session, name)
    raise AttributeError(name)
