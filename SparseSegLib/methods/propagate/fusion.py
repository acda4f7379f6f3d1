"""Fusing the network's and the registration's class probabilities, and anchoring the result at the paint."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage, stats

from ...engine.postprocess import components_touching, filled, object_labels
from ...engine.sitk_preprocessing import bounding_box
from .settings import AUTO_CLASS_SEPARATION


def fuse(network: np.ndarray, registration: np.ndarray, mode: str, margin: int = 2,
         threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities)`` from two ``(C, k, j, i)`` probability maps.

    ``intersection``: a voxel takes class c only where both branches' most likely class is c (the seed's
    certain region), otherwise background; ``average``: the argmax of the mean, kept as object only where the
    mean's object probability (one minus background) exceeds ``threshold`` (0.5: the plain argmax); ``network`` /
    ``registration``: one branch alone (ablations); ``near``: the network's class wherever it lies within
    ``margin`` pixels (in-plane) of the registration's foreground, so the network draws the boundary but cannot
    add objects the propagation never reached. The probabilities returned are the mean in every mode
    (what the uncertainty map and the suggested slice are computed from).
    """
    mean = 0.5 * (network + registration)
    if mode == "network":
        return network.argmax(0).astype(np.uint8), network
    if mode == "registration":
        return registration.argmax(0).astype(np.uint8), registration
    if mode == "average":
        return object_labels(mean, threshold), mean
    by_network, by_registration = network.argmax(0), registration.argmax(0)
    if mode == "near":
        reach = ndimage.binary_dilation(by_registration > 0, structure=np.ones((1, 3, 3), bool), iterations=max(1, margin))
        return np.where(reach, by_network, 0).astype(np.uint8), mean
    labels = np.where(by_network == by_registration, by_network, 0).astype(np.uint8)
    return labels, mean


def classes_from_registration(labels: np.ndarray, registration: np.ndarray) -> np.ndarray:
    """``labels``' object (foreground) with each voxel's class taken from the registration where it has any.

    Which part of an object a voxel belongs to (hippocampus head or body) is often a convention the image
    hardly shows; the registration carries the painted split between parts along the object, while a network
    that saw few slices blurs it. The networks still decide what is object; voxels the registration never
    reached keep the fused class. One foreground class: ``labels`` unchanged.
    """
    if registration.shape[0] <= 2:
        return labels
    foreground = registration[1:]
    reached = foreground.max(0) > 0
    by_registration = foreground.argmax(0) + 1
    result = labels.copy()
    change = (labels > 0) & reached
    result[change] = by_registration[change]
    return result


def class_separation(image: np.ndarray, label: np.ndarray, annotated: np.ndarray) -> float:
    """How well the painted voxels' intensities tell the painted foreground classes apart: the smallest
    ``|2 AUC - 1|`` over pairs of classes (1: some threshold separates them perfectly; 0: no better than chance;
    1.0 with fewer than two classes painted).

    Why: where the image separates classes (tissues), the networks draw the class boundary better than a
    registration chain; where it does not (parts of one structure split by the user), only the painted split
    carried by the registration knows where one part ends."""
    values = [image[annotated & (label == c)] for c in np.unique(label[annotated]) if c > 0]
    separations = [abs(2 * stats.mannwhitneyu(first, second).statistic / (first.size * second.size) - 1)
                   for first, second in itertools.combinations(values, 2)]
    return float(min(separations, default=1.0))


def classes_follow_registration(mode: str, image: np.ndarray, label: np.ndarray, annotated: np.ndarray) -> bool:
    """Whether the ``classes`` option ``mode`` takes each object voxel's class from the registration for this
    paint (``auto``: where the painted classes separate less than :data:`AUTO_CLASS_SEPARATION`)."""
    return mode == "registration" or (mode == "auto" and class_separation(image, label, annotated) < AUTO_CLASS_SEPARATION)


def open_ends(labels: np.ndarray, painted: list[int], radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """``labels`` with the object's thin parts beyond the outermost painted slices removed: a 3D morphological
    opening of the foreground by a ball of ``radius_mm`` (physical units, ``spacing`` of ``labels``' axes) decides
    which voxels outside the painted span ``[min(painted), max(painted)]`` stay object.

    Why: from few painted slices both branches carry the object on into whatever bright structure touches its
    ends (the left atrium into its pulmonary veins and ventricle); those over-extensions are narrower than the
    object, so an opening at a fraction of the object's own thickness removes them, while slices between painted
    ones, where both branches are sure, are left alone. ``radius_mm`` below one voxel: ``labels`` unchanged.
    """
    reach = [int(np.floor(radius_mm / max(s, 1e-6))) for s in spacing]
    if not painted or max(reach) < 1:
        return labels
    kept = ball_opening(labels > 0, radius_mm, spacing)
    kept[min(painted):max(painted) + 1] = True
    result = labels.copy()
    result[~kept] = 0
    return result


def ball_opening(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float],
                 slab_voxels: int = 8_000_000) -> np.ndarray:
    """The morphological opening of ``mask`` by a ball of ``radius_mm`` (voxels of ``spacing`` mm; outside the
    array is background), from two Euclidean distance transforms: a voxel survives the erosion where no
    background lies within the radius, and the dilation gives back every voxel within the radius of a survivor.

    The same set as ``ndimage.binary_opening`` with the ball as structuring element, at a cost that does not grow
    with the ball: on a 512 x 512 x 300 scan's crop, whose 0.22 mm voxels make the ball 21 voxels wide, that took
    87 s. Computed in the mask's bounding box grown by the radius plus one voxel, which holds every voxel that
    can change, and there in slabs along axis 0 of about ``slab_voxels`` voxels: a distance transform holds 20
    bytes per voxel (its float64 distances and int32 feature indices), 1.4 GiB on that crop at once.
    """
    if not mask.any():
        return mask.copy()
    box = bounding_box(mask, tuple(int(np.ceil(radius_mm / max(s, 1e-6))) + 1 for s in spacing)).slices
    padded = np.pad(mask[box], 1)  # the array's edge is background, as binary_erosion's border
    eroded = _farther_than(padded, radius_mm, spacing, slab_voxels)
    opened = ~_farther_than(~eroded, radius_mm, spacing, slab_voxels) if eroded.any() else eroded
    result = np.zeros_like(mask)
    result[box] = opened[1:-1, 1:-1, 1:-1]
    return result


def _farther_than(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float],
                  slab_voxels: int) -> np.ndarray:
    """Where ``mask``'s voxels lie more than ``radius_mm`` from its nearest ``False`` voxel, computed in slabs along
    axis 0. Each slab's distance transform is read with the radius' reach of slices on either side, so a voxel
    kept sees every ``False`` voxel that could be within the radius, and the answer is the whole array's voxel for
    voxel; a slab with no ``False`` voxel within reach is farther everywhere."""
    def farther(part: np.ndarray) -> np.ndarray:
        if part.all():
            return np.ones(part.shape, bool)
        return ndimage.distance_transform_edt(part, sampling=spacing) > radius_mm

    halo = int(np.ceil(radius_mm / max(spacing[0], 1e-6))) + 1
    plane = int(np.prod(mask.shape[1:]))
    core = max(2 * halo, slab_voxels // max(plane, 1) - 2 * halo)
    if core >= mask.shape[0]:
        return farther(mask)
    result = np.empty(mask.shape, bool)
    for start in range(0, mask.shape[0], core):
        stop = min(start + core, mask.shape[0])
        low, high = max(0, start - halo), min(mask.shape[0], stop + halo)
        result[start:stop] = farther(mask[low:high])[start - low:stop - low]
    return result


def anchor_at_paint(labels: np.ndarray, painted_foreground: np.ndarray,
                    painted_background: np.ndarray | None = None) -> np.ndarray:
    """Keep the 3D connected components of the foreground that touch painted foreground, fill their holes.

    A component the painting cannot reach is a false positive by construction (the user painted the object, and
    the object is what is propagated); with nothing touching the paint the labels are returned unchanged. A hole
    (background enclosed in 3D) that holds ``painted_background`` stays background: the user painted it so, as in
    a brain's ventricles inside its tissue; only the holes the paint says nothing about are filled.
    """
    keep = components_touching(labels > 0, painted_foreground)
    if keep is None:
        return labels
    result = np.where(keep, labels, 0).astype(labels.dtype)
    holes = filled(keep) & ~keep
    if holes.any() and painted_background is not None and (holes & painted_background).any():
        parts, _ = ndimage.label(holes)  # face-connected, as the fill
        holes &= ~np.isin(parts, np.unique(parts[holes & painted_background]))
    if holes.any():
        # a hole takes the class most of its neighbours have (one class: that class)
        values = result[keep]
        result[holes] = np.bincount(values, minlength=2)[1:].argmax() + 1
    return result


def prediction_region(registration: np.ndarray, threshold: float, margin: int) -> tuple[slice, slice, slice] | None:
    """The box the networks must predict in for ``average`` fusion (:func:`fuse`): every voxel whose registered
    object probability could still make the fused result object, grown by ``margin`` voxels of context on each side
    (None: no such voxel).

    A voxel is object only where the mean of the two branches' object probabilities exceeds ``threshold``; the
    network's is at most 1, so nowhere the registration's is at most ``2 threshold - 1`` can the network's vote
    matter. Predicting the box alone saves prediction on a large scan whose object spans part of it; outside it
    the fused maps take the registration's probabilities."""
    possible = (1.0 - registration[0]) > 2.0 * threshold - 1.0
    return bounding_box(possible, margin).slices if possible.any() else None
