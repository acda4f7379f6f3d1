"""What a user gets from the same painted slices without SparseSeg: the tools 3D Slicer already has.

* :func:`fill_between_slices`: Slicer's Segment Editor effect *Fill between slices*, which is ITK's morphological
  contour interpolation (Albu et al. 2008; ``vtkITKMorphologicalContourInterpolator`` in Slicer, the pip package
  ``itk-morphologicalcontourinterpolation`` here). It interpolates each class between painted slices and leaves
  everything beyond the outermost painted slices empty, as in Slicer. With one painted slice there is nothing
  to interpolate: the result is that slice alone, as Slicer leaves it.
* :func:`copy_slices`: the simplest 3D guess from 2D paint: every slice of the object's true extent along the
  axis takes the label of the nearest painted slice. It knows the extent from the reference, which a user only
  knows roughly, so it is a generous baseline.

Both take label maps in ``(k, j, i)`` order and slices along an array axis (0 = k).
"""

from __future__ import annotations

import os

import numpy as np

from ...annotation import object_extent
from ...errors import SparseSegError


def painted_label(reference: np.ndarray, slices: list[int], axis: int = 0) -> np.ndarray:
    """A user's paint: ``reference`` on ``slices`` along ``axis``, zero elsewhere."""
    reference = np.asarray(reference)
    painted = np.zeros_like(reference)
    index: list = [slice(None)] * 3
    index[axis] = sorted(set(int(s) for s in slices))
    painted[tuple(index)] = reference[tuple(index)]
    return painted


def copy_slices(reference: np.ndarray, slices: list[int], axis: int = 0) -> np.ndarray:
    """Each slice of the reference object's extent along ``axis`` copied from the nearest of ``slices`` (the
    lower one on a tie); nothing outside the extent."""
    reference = np.asarray(reference)
    if not slices:
        raise SparseSegError("copy-the-slice needs at least one painted slice", "Paint a slice first.")
    first, last = object_extent(reference, axis)
    painted = np.array(sorted(set(int(s) for s in slices)))
    moved = np.moveaxis(reference, axis, 0)
    result = np.zeros_like(moved)
    for target in range(first, last + 1):
        source = painted[int(np.argmin(np.abs(painted - target)))]
        result[target] = moved[source]
    return np.moveaxis(result, 0, axis)


def _itk():
    """ITK with one thread: the interpolator's multi-threaded run corrupts the heap now and then (seen as
    ``malloc(): unaligned fastbin chunk`` aborts with ITK 5.4 on this project's machines); one thread never did."""
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    try:
        import itk
    except ImportError:
        raise SparseSegError("Fill between slices needs ITK's morphological contour interpolation",
                             "pip install itk-morphologicalcontourinterpolation (or `pip install -e .[bench]`).") from None
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    return itk


def fill_between_slices(painted: np.ndarray, axis: int = 0) -> np.ndarray:
    """Slicer's Fill between slices on a painted label map, interpolating along ``axis`` (0 = k) only, as the
    user painted; classes are interpolated separately. One painted slice comes back as it is."""
    painted = np.asarray(painted)
    if painted.ndim != 3:
        raise SparseSegError(f"Fill between slices needs a 3D label map, not shape {painted.shape}", "Give (k, j, i).")
    if painted.size and (painted.min() < 0 or painted.max() > 255):
        raise SparseSegError("Fill between slices takes class values 0..255", "Give a uint8 label map.")
    other = tuple(a for a in range(3) if a != axis)
    if np.count_nonzero(np.any(painted > 0, axis=other)) < 2:
        return painted.astype(np.uint8, copy=True)  # nothing to interpolate between (the filter returns it as is)
    itk = _itk()
    interpolator = itk.MorphologicalContourInterpolator.New(itk.image_from_array(np.ascontiguousarray(painted, np.uint8)))
    interpolator.SetAxis(2 - axis)  # ITK numbers axes (i, j, k)
    interpolator.SetNumberOfWorkUnits(1)
    interpolator.Update()
    return np.asarray(itk.array_from_image(interpolator.GetOutput()), dtype=np.uint8)
