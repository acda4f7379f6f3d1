"""Which slice ``propagate`` asks the user to paint next: where the most predicted object lies far from the paint
(:func:`volume_weighted_slice`, the default since the ninth session), or the middle of the widest unpainted stretch.

Measured on the hippocampus report scans (docs/results/interactive.md): painting the middle of the largest unpainted
gap of the object's extent beat the generic entropy suggestion (the least certain slice) by about 0.1 Dice at three
painted slices. Entropy points at a slice where the two branches disagree, often at the end of the faded
registration or past the object; a propagation gains most from a new anchor where it had to travel farthest. The
extent here is the current result's (the slices that hold predicted foreground), so no reference is needed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def widest_gap_slice(labels: np.ndarray, painted: list[int]) -> int | None:
    """The middle of the longest run of unpainted slices (axis 0) within the predicted object's extent, or None
    when every slice of that extent is painted (or nothing is predicted)."""
    present = np.flatnonzero((labels > 0).any(axis=(1, 2)))
    if present.size == 0:
        return None
    first, last = int(present[0]), int(present[-1])
    painted_set = set(int(p) for p in painted)
    best, start = None, None
    for position in range(first, last + 2):
        free = position <= last and position not in painted_set
        if free and start is None:
            start = position
        elif not free and start is not None:
            run = (position - start, -start)
            if best is None or run > best[0]:
                best = (run, (start + position - 1) // 2)
            start = None
    return None if best is None else int(best[1])


def volume_weighted_slice(labels: np.ndarray, painted: list[int]) -> int | None:
    """The unpainted slice (axis 0) that brings the predicted object's voxels closest to a painted slice: the one
    minimising the sum over slices of predicted foreground area times the distance to the nearest painted slice.

    Why: a propagation's error grows with the distance it travels and with how much object it carries there, so
    the next anchor should go where most predicted object lies far from the paint, not merely where the unpainted
    stretch is longest. From a central slice both open ends reach about equally far (the same fade), so the
    widest stretch is close to a coin toss, while a bulky part on one side (a hippocampus's head) shows in the
    predicted area. With a uniform area it picks the middle of the widest stretch, as :func:`widest_gap_slice`.
    None when every slice of the predicted extent is painted (or nothing is predicted)."""
    area = (labels > 0).sum(axis=(1, 2)).astype(np.float64)
    present = np.flatnonzero(area)
    if present.size == 0:
        return None
    positions = np.arange(labels.shape[0])
    painted_set = sorted(set(int(p) for p in painted))
    nearest = (np.min(np.abs(positions[:, None] - np.array(painted_set)[None, :]), axis=1).astype(np.float64)
               if painted_set else np.full(labels.shape[0], np.inf))
    candidates = [c for c in range(int(present[0]), int(present[-1]) + 1) if c not in painted_set]
    if not candidates:
        return None
    costs = [float(np.sum(area * np.minimum(nearest, np.abs(positions - c)))) for c in candidates]
    return int(candidates[int(np.argmin(costs))])


def other_view_slice(labels: np.ndarray) -> tuple[int, int] | None:
    """``(axis, index)`` of the predicted object's largest outline across one of the two axes the paint does not
    lie across (1 or 2 of ``labels``, whose axis 0 is the painted one): the middle slice of its extent across
    each, the one holding more object. None when nothing is predicted.

    Why: a slice painted across the object shows its outline in one plane; propagation has to guess how far it
    reaches and, for an object in parts (a hippocampus' head and body), where the parts meet. A slice across
    another axis through the object's length shows both (the painted slices across both axes are kept, see
    :mod:`.volume`); hippocampus dev scans, class mean after one correction 0.37-0.63 -> 0.66-0.82."""
    foreground = labels > 0
    best = None
    for axis in (1, 2):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(foreground.any(axis=other))
        if present.size == 0:
            return None
        index = int((present[0] + present[-1]) // 2)
        area = int(np.count_nonzero(np.take(foreground, index, axis=axis)))
        if best is None or area > best[0]:
            best = (area, axis, index)
    return best[1], best[2]


def nearest_paint_plane(labels: np.ndarray, annotated: np.ndarray,
                        spacing: tuple[float, float, float]) -> tuple[int, int] | None:
    """``(axis, index)`` of the whole slice, across any axis, that brings the predicted object closest to the paint:
    minimising the sum over predicted foreground voxels of the distance (mm) to the nearest annotated voxel or to
    that slice. None when nothing unannotated is predicted.

    Why: ROI boxes have no slice axis, and the worker's generic suggestion (the least certain slice) pointed at the
    volume's first or last slice, with no object on it, on 4 of 5 hippocampus dev scans with three boxes (3 of 5
    with one box): the correction added little.
    This is :func:`volume_weighted_slice`'s rule with the paint's true 3D distance, so it also weighs a slice across
    the object's length (docs/results/interactive.md, "Thirty-first session")."""
    foreground = labels > 0
    if not (foreground & ~annotated).any():
        return None
    # every annotated voxel lies in this box, so the distances inside it are exact; outside it there is nothing to
    # weigh (a scan's crop can be far larger than the object and its paint)
    region = ndimage.find_objects((foreground | annotated).astype(np.int8))[0]
    foreground, annotated = foreground[region], annotated[region]
    distance = ndimage.distance_transform_edt(~annotated, sampling=spacing)[foreground]
    coordinates = np.nonzero(foreground)
    best = None
    for axis in range(3):
        position = coordinates[axis]
        whole = annotated.all(axis=tuple(a for a in range(3) if a != axis))
        for index in np.unique(position):
            if whole[index]:
                continue
            cost = float(np.minimum(distance, np.abs(position - index) * spacing[axis]).sum())
            if best is None or cost < best[0]:
                best = (cost, axis, int(index) + region[axis].start)
    return None if best is None else (best[1], best[2])


#: ``suggest`` option -> rule over (labels, painted slices); ``entropy`` is the worker's generic suggestion instead;
#: ``view`` is :func:`other_view_slice` while the paint lies across one axis, then ``volume``
RULES = {"gap": widest_gap_slice, "volume": volume_weighted_slice, "view": volume_weighted_slice}
