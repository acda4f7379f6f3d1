"""Label-map post-processing applied after prediction (stored in the model's config.json).

``lcc``: keep the largest 3D connected component of the foreground (all classes together), as a
hippocampus crop holds one structure; ``fill``: fill enclosed holes of the foreground in 3D, each
filled voxel taking its most probable foreground class; ``lcc-fill``: both.

"Largest component" is right for one object but would delete the second structure of a label that holds two (a
left and a right organ, several lesions, separate organs). So a model also stores how many objects its training
labels hold (:func:`object_count`, measured by the method that trains it; 1 for a model saved before it was
stored), and ``lcc`` keeps that many of the largest components. On a scan whose object is partly known (a job's
own scan: painted or already labelled voxels), ``lcc`` keeps instead the components that hold known object
(``anchor``), as the Start default anchors its result at the paint.

A model with several object classes may also store how many parts each class forms in its training labels
(:func:`class_part_counts`); ``lcc`` then gives a class's smaller islands beyond that count to the most probable
other object class (:func:`kept_class_parts`). The object's outline does not change, only which class a piece of it
carries.

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


#: A component of a training label counts as an object when it holds at least this share of the label's
#: foreground: the stray bits a propagated label can carry hold well under it (left atrium: under 2% on every one of
#: 64 training volumes; hippocampus: 4 of 140 volumes have a second part of 5% or more), while each of two
#: structures of similar size holds about half.
OBJECT_SHARE = 0.05


def _components(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-connected component labels of a boolean mask and each component's size (index 0: background, size 0)."""
    components, _ = ndimage.label(foreground, structure=ndimage.generate_binary_structure(foreground.ndim, CONNECTIVITY))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components, sizes


def components_touching(foreground: np.ndarray, anchor: np.ndarray) -> np.ndarray | None:
    """The face-connected components of a boolean mask that hold a voxel of the boolean ``anchor``; None when none
    does."""
    components, _ = _components(foreground)
    touching = np.unique(components[anchor & foreground])
    return np.isin(components, touching) if touching.size else None


def largest_component(foreground: np.ndarray, count: int = 1, anchor: np.ndarray | None = None) -> np.ndarray:
    """The ``count`` largest face-connected components of a boolean mask (on a tie, the first in scan order); with
    an ``anchor`` that some component holds, the components holding it instead."""
    if anchor is not None:
        touching = components_touching(foreground, anchor)
        if touching is not None:
            return touching
    components, sizes = _components(foreground)
    count = max(1, int(count))
    if len(sizes) - 1 <= count:
        return foreground
    kept = np.argsort(-sizes, kind="stable")[:count]
    return np.isin(components, kept[sizes[kept] > 0])


def object_count(labels: list[np.ndarray], share: float = OBJECT_SHARE) -> int:
    """How many objects a label map of this kind holds: per map, the face-connected parts holding at least ``share``
    of its object voxels (label > 0, all classes together); the median over the maps (at least 1), so that one map
    with a split or a stray part does not decide. Unknown voxels (label < 0: a pseudo-label left undecided) join
    parts, they do not split them: a self-labelling chain leaves a thin stretch of the object uncertain, and the
    object on both sides of it is still one object."""
    counts = []
    for label in labels:
        label = np.asarray(label)
        components, _ = _components(label != 0)
        sizes = np.bincount(components[label > 0], minlength=components.max() + 1)
        if sizes.sum():
            counts.append(int((sizes >= share * sizes.sum()).sum()))
    return max(1, int(np.median(counts))) if counts else 1


def filled(foreground: np.ndarray) -> np.ndarray:
    """``foreground`` with its enclosed holes (background not face-connected to the border) filled, by MONAI."""
    channel = foreground.astype(np.uint8)[None]
    return fill_holes(channel, applied_labels=[1], connectivity=CONNECTIVITY)[0].astype(bool)


def painted_holes(labels: np.ndarray, painted_background: np.ndarray) -> bool:
    """Whether ``labels``' foreground encloses (in 3D) background the user painted: then the object has real holes,
    and a saved model must not fill them (:func:`without_fill`).

    A 3D hole meets a slice only where that slice's own foreground encloses it, so where no painted slice shows
    painted background enclosed in 2D (every scan of the left atrium, for one) the 3D fill is never run."""
    foreground = labels > 0
    for index in np.flatnonzero(painted_background.any(axis=(1, 2))):
        if (ndimage.binary_fill_holes(foreground[index]) & ~foreground[index] & painted_background[index]).any():
            return bool((filled(foreground) & ~foreground & painted_background).any())
    return False


def without_fill(mode: str) -> str:
    """Post-processing ``mode`` without its hole filling (``lcc-fill`` -> ``lcc``, ``fill`` -> ``none``)."""
    return {"lcc-fill": "lcc", "fill": "none"}.get(mode, mode)


def class_part_counts(labels: list[np.ndarray], num_classes: int, share: float = OBJECT_SHARE) -> tuple[int, ...]:
    """Per object class (1 .. ``num_classes`` - 1), how many parts it forms in label maps of this kind: the
    :func:`object_count` of its own voxels (unknown voxels still join parts)."""
    return tuple(object_count([np.where(label == value, 1, np.where(label < 0, -1, 0)) for label in labels], share)
                 for value in range(1, num_classes))


def kept_class_parts(labels: np.ndarray, probabilities: np.ndarray, parts: tuple[int, ...]) -> np.ndarray:
    """``labels`` where each object class keeps its ``parts[class - 1]`` largest components and the voxels of its
    other components take their most probable other object class: the object stays as it is, only a stray island
    of one class inside another changes class (a class split made slice by slice leaves such islands)."""
    labels = labels.copy()
    for value, count in enumerate(parts, start=1):
        mask = labels == value
        if not mask.any():
            continue
        stray = mask & ~largest_component(mask, count)
        if stray.any():
            others = probabilities[1:, stray].copy()
            others[value - 1] = -np.inf
            labels[stray] = (others.argmax(0) + 1).astype(labels.dtype)
    return labels


def postprocess_labels(labels: np.ndarray, probabilities: np.ndarray | None, mode: str, objects: int = 1,
                       anchor: np.ndarray | None = None, class_parts: tuple[int, ...] = ()) -> np.ndarray:
    """``labels`` ``(k, j, i)`` after ``mode``; ``probabilities`` ``(C, k, j, i)`` choose filled classes; ``lcc``
    keeps the components holding ``anchor`` (known object of this scan), else the ``objects`` largest, and with
    ``class_parts`` (several object classes) each class keeps that many parts (:func:`kept_class_parts`)."""
    if mode not in POSTPROCESSING:
        raise SparseSegError(f"unknown post-processing {mode!r}", f"Use one of: {', '.join(POSTPROCESSING)}.")
    if mode == "none" or not labels.any():
        return labels
    labels = labels.copy()
    foreground = labels > 0
    if mode in ("lcc", "lcc-fill"):
        foreground = largest_component(foreground, objects, anchor)
        labels[~foreground] = 0
    if mode in ("fill", "lcc-fill"):
        holes = filled(foreground) & ~foreground
        if holes.any():
            if probabilities is not None and probabilities.shape[0] > 2:
                labels[holes] = (probabilities[1:, holes].argmax(0) + 1).astype(labels.dtype)
            else:
                labels[holes] = 1
    if mode in ("lcc", "lcc-fill") and class_parts and probabilities is not None and probabilities.shape[0] > 2:
        labels = kept_class_parts(labels, probabilities, class_parts)
    return labels
