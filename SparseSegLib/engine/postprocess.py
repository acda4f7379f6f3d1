"""Label-map post-processing applied after prediction (stored in the model's config.json).

``lcc``: keep the largest 3D connected component of the foreground (all classes together), as a
hippocampus crop holds one structure; ``fill``: fill enclosed holes of the foreground in 3D, each
filled voxel taking its most probable foreground class; ``lcc-fill``: both.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import SparseSegError

POSTPROCESSING = ("none", "lcc", "fill", "lcc-fill")


def postprocess_labels(labels: np.ndarray, probabilities: np.ndarray | None, mode: str) -> np.ndarray:
    """``labels`` ``(k, j, i)`` after ``mode``; ``probabilities`` ``(C, k, j, i)`` choose filled classes."""
    if mode not in POSTPROCESSING:
        raise SparseSegError(f"unknown post-processing {mode!r}", f"Use one of: {', '.join(POSTPROCESSING)}.")
    if mode == "none" or not labels.any():
        return labels
    labels = labels.copy()
    foreground = labels > 0
    if mode in ("lcc", "lcc-fill"):
        components, count = ndimage.label(foreground)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            foreground = components == int(sizes.argmax())
            labels[~foreground] = 0
    if mode in ("fill", "lcc-fill"):
        holes = ndimage.binary_fill_holes(foreground) & ~foreground
        if holes.any():
            if probabilities is not None and probabilities.shape[0] > 2:
                labels[holes] = (probabilities[1:, holes].argmax(0) + 1).astype(labels.dtype)
            else:
                labels[holes] = 1
    return labels
