"""Intensity preprocessing shared by training and prediction (stored in the model's config)."""

from __future__ import annotations

import numpy as np

from ..errors import SparseSegError

NORMALIZATIONS = ("zscore", "zscore-slice", "zscore-slice-1", "zscore-slice-2", "sitk", "none")


def normalize(image: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """Normalise intensities so that scanners and protocols look alike to the network.

    ``zscore``: whole volume to mean 0, sd 1 (robust default for cropped MRI/CT patches);
    ``zscore-slice``: each slice along axis 0 on its own (what the incremental 2D self-labelling
    paper does; ``-1`` / ``-2``: each slice across array axis 1 / 2, for a model trained on slices across
    that axis); ``sitk``: the Mean Teacher seed's SimpleITK steps (z-score over the non-zero voxels, then
    clipping at the 0.5/99.5 percentiles, :mod:`.sitk_preprocessing`); ``none``: leave as is (data that is already
    normalised).
    """
    image = np.asarray(image, dtype=np.float32)
    if mode == "none":
        return image.copy()
    if mode == "zscore":
        return _zscore(image, axis=None)
    if mode == "sitk":
        from .sitk_preprocessing import normalize_intensity

        return normalize_intensity(image)
    if mode == "zscore-slice":
        return _zscore(image, axis=(1, 2))
    if mode in ("zscore-slice-1", "zscore-slice-2"):
        across = int(mode[-1])
        return _zscore(image, axis=tuple(a for a in range(3) if a != across))
    raise SparseSegError(f"unknown normalization {mode!r}", f"Use one of: {', '.join(NORMALIZATIONS)}.")


def _zscore(image: np.ndarray, axis: tuple[int, ...] | None) -> np.ndarray:
    mean = image.mean(axis=axis, keepdims=True)
    sd = image.std(axis=axis, keepdims=True)
    return ((image - mean) / np.where(sd > 1e-6, sd, 1.0)).astype(np.float32)
