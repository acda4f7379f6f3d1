"""The voxel spacing a model learnt at, and resampling a scan of another spacing to it and back.

A network learns an object's size in voxels. Applied to a scan whose voxels are half as large, it sees the object
twice as large as anything it learnt, and it fails without a word (a left-atrium model trained at 1.25 mm scored
Dice 0.451 on 16 val scans at 0.625 mm, against 0.794 at its own spacing: docs/results/collaborative-default.md).
So a model keeps the range of spacings it was trained on, and a scan outside that range is resampled to the
model's median spacing for prediction (only on the axes outside it: a slice thickness the model has seen is kept
when only the pixels differ); its
class probabilities are resampled back onto the scan's own grid (linear), so the result lands on the scan's voxels
and is thresholded and post-processed there. Scans within the range are predicted as they are, as before.

Arrays are ``(k, j, i)`` and spacings ``(k, j, i)`` in mm, as everywhere in the engine. Resampling keeps the first
voxel's centre and the physical extent (SimpleITK, identity direction on the array's own frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: A scan is predicted at the model's spacing on an axis that lies this far (relative) outside the training range.
#: Not tuned: a tenth of a voxel's size is well within the size variation of one structure between scans.
SPACING_TOLERANCE = 0.1


def training_spacing(spacings: Iterable[Sequence[float]]) -> dict[str, list[float]]:
    """``{"median", "min", "max"}`` per axis ``(k, j, i)`` in mm over the training scans' spacings (empty if none)."""
    table = np.array([tuple(float(s) for s in spacing) for spacing in spacings], dtype=float)
    if table.size == 0:
        return {}
    return {"median": np.median(table, 0).round(6).tolist(), "min": table.min(0).round(6).tolist(),
            "max": table.max(0).round(6).tolist()}


def axes_outside(spacing_kji: Sequence[float], trained: dict, tolerance: float = SPACING_TOLERANCE) -> np.ndarray:
    """Per axis ``(k, j, i)``: whether a scan of ``spacing_kji`` lies outside the model's training range (widened
    by ``tolerance``). A model saved before spacings were recorded has no range: never."""
    if not trained:
        return np.zeros(3, bool)
    low = np.asarray(trained["min"], float) * (1.0 - tolerance)
    high = np.asarray(trained["max"], float) * (1.0 + tolerance)
    spacing = np.asarray(spacing_kji, float)
    return (spacing < low) | (spacing > high)


def prediction_spacing(spacing_kji: Sequence[float], trained: dict) -> tuple[float, float, float] | None:
    """The spacing to predict a scan at: the model's median on each axis outside its range, the scan's own on the
    others (a slice thickness the model has seen is not resampled because the pixels are finer); None when every
    axis is within the range."""
    outside = axes_outside(spacing_kji, trained)
    if not outside.any():
        return None
    return tuple(float(m if o else s) for m, o, s in zip(trained["median"], outside, spacing_kji))


def resampled_shape(shape: Sequence[int], spacing_from: Sequence[float],
                    spacing_to: Sequence[float]) -> tuple[int, ...]:
    """The shape covering the same extent at ``spacing_to`` (at least one voxel per axis)."""
    return tuple(max(1, int(round(n * f / t))) for n, f, t in zip(shape, spacing_from, spacing_to))


def _sitk_image(array: np.ndarray, spacing_kji: Sequence[float]):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing_kji[::-1]))
    return image


def resample(array: np.ndarray, spacing_from: Sequence[float], spacing_to: Sequence[float],
             shape_to: Sequence[int] | None = None, nearest: bool = False) -> np.ndarray:
    """``array`` ``(k, j, i)`` at ``spacing_from`` resampled onto the grid of ``spacing_to`` (float32): linear, or
    ``nearest`` neighbour for label maps and masks (cast the result back).

    ``shape_to`` defaults to the same extent (:func:`resampled_shape`); points past the last voxel centre take the
    nearest voxel's value rather than zero, so a probability map keeps its background at the border.
    """
    import SimpleITK as sitk

    shape = tuple(shape_to) if shape_to is not None else resampled_shape(array.shape, spacing_from, spacing_to)
    reference = sitk.Image([int(n) for n in shape[::-1]], sitk.sitkFloat32)
    reference.SetSpacing(tuple(float(s) for s in spacing_to[::-1]))
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    resampler.SetUseNearestNeighborExtrapolator(True)
    return sitk.GetArrayFromImage(resampler.Execute(_sitk_image(array, spacing_from)))


def resample_probabilities(probabilities: np.ndarray, spacing_from: Sequence[float], spacing_to: Sequence[float],
                           shape_to: Sequence[int]) -> np.ndarray:
    """Class probabilities ``(C, k, j, i)`` moved onto another grid, each channel linear, renormalised to sum 1."""
    moved = np.stack([resample(channel, spacing_from, spacing_to, shape_to) for channel in probabilities])
    np.clip(moved, 0.0, None, out=moved)
    total = moved.sum(0, keepdims=True)
    return moved / np.maximum(total, 1e-6)
