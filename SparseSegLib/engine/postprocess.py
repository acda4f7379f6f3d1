"""Label-map post-processing applied after prediction (stored in the model's config.json).

``lcc``: keep the largest 3D connected component of the foreground (all classes together), as a
hippocampus crop holds one structure; ``fill``: fill enclosed holes of the foreground in 3D, each
filled voxel taking its most probable foreground class; ``lcc-fill``: both.

Both steps treat the foreground of all classes as one object and use face connectivity (6 neighbours in
3D, ``connectivity=1``): a hole between two classes is filled, and a stray blob touching the object
only at an edge or corner is a separate component. Hole filling is MONAI's
(:func:`monai.transforms.utils.fill_holes`, run on the one-channel foreground mask with label 1 so it
does not fill per class). The largest component stays with scipy: MONAI's
``get_largest_connected_component_mask`` / ``KeepLargestConnectedComponent`` label components with
scikit-image (or cuCIM), which is neither a SparseSeg nor a MONAI dependency, and installing it into
Slicer's Python for a five-line step is not worth it. This module runs in the worker only (it is
imported by the engine, which imports torch).
"""

from __future__ import annotations

import numpy as np
from monai.transforms.utils import fill_holes
from scipy import ndimage

from ..errors import SparseSegError

POSTPROCESSING = ("none", "lcc", "fill", "lcc-fill")

#: Face connectivity for both steps (scipy's default structure for ``label`` and ``binary_fill_holes``).
CONNECTIVITY = 1


def object_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The argmax of ``(C, ...)`` probabilities, kept as object only where the object probability (one minus
    background) exceeds ``threshold``; at 0.5 or below the plain argmax (an object argmax already has background
    < 0.5). Networks trained on pseudo-labels that run a little past the object tend to say object too readily;
    a threshold above 0.5 asks for more evidence."""
    labels = probabilities.argmax(0).astype(np.uint8)
    if threshold > 0.5:
        labels[probabilities[0] >= 1.0 - threshold] = 0
    return labels


def largest_component(foreground: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a boolean mask (the first in scan order on a tie)."""
    components, count = ndimage.label(foreground, structure=ndimage.generate_binary_structure(foreground.ndim, CONNECTIVITY))
    if count <= 1:
        return foreground
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(sizes.argmax())


def filled(foreground: np.ndarray) -> np.ndarray:
    """``foreground`` with its enclosed holes (background not face-connected to the border) filled, by MONAI."""
    channel = foreground.astype(np.uint8)[None]
    return fill_holes(channel, applied_labels=[1], connectivity=CONNECTIVITY)[0].astype(bool)


def postprocess_labels(labels: np.ndarray, probabilities: np.ndarray | None, mode: str) -> np.ndarray:
    """``labels`` ``(k, j, i)`` after ``mode``; ``probabilities`` ``(C, k, j, i)`` choose filled classes."""
    if mode not in POSTPROCESSING:
        raise SparseSegError(f"unknown post-processing {mode!r}", f"Use one of: {', '.join(POSTPROCESSING)}.")
    if mode == "none" or not labels.any():
        return labels
    labels = labels.copy()
    foreground = labels > 0
    if mode in ("lcc", "lcc-fill"):
        foreground = largest_component(foreground)
        labels[~foreground] = 0
    if mode in ("fill", "lcc-fill"):
        holes = filled(foreground) & ~foreground
        if holes.any():
            if probabilities is not None and probabilities.shape[0] > 2:
                labels[holes] = (probabilities[1:, holes].argmax(0) + 1).astype(labels.dtype)
            else:
                labels[holes] = 1
    return labels
