"""The annotated mask of a user's annotation, derived as 3D Slicer users annotate.

A user paints a few slices, or paints inside a few ROI boxes. Which voxels then carry ground truth:

* ``slices``: every voxel of every slice that carries paint along the chosen axis, unpainted voxels
  of those slices included (they are background). ``axis`` is an array axis in ``(k, j, i)`` order
  (0 = k, the slice stack); ``"auto"`` picks the axis along which the fewest slices carry paint, which
  is the axis the user painted on (painting 3 axial slices touches 3 k-slices but dozens of j- and
  i-slices). Ties go to the lower axis.
* ``boxes``: every voxel inside the boxes, given by two opposite corners either in voxel indices
  ``{"ijk": [[i0, j0, k0], [i1, j1, k1]]}`` (inclusive, clipped to the image) or in RAS millimetres
  ``{"ras": [[x0, y0, z0], [x1, y1, z1]]}`` (an axis-aligned ROI as 3D Slicer shows it; a voxel is in
  the box when its centre is, mapped through :meth:`Geometry.ijk_to_ras`).
* ``mask``: an explicit mask (non-zero = annotated); ``full``: everything.

Only numpy is needed, so the GUI process can preview the mask before it starts a worker.
"""

from __future__ import annotations

import numpy as np

from ..case import Geometry
from ..errors import SparseSegError

AXIS_NAMES = ("k", "j", "i")


def painted_slices(label: np.ndarray, axis: int) -> list[int]:
    """Indices of the slices along ``axis`` holding any non-zero label."""
    other = tuple(a for a in range(3) if a != axis)
    return [int(s) for s in np.flatnonzero(np.any(np.asarray(label) > 0, axis=other))]


def resolve_slice_axis(label: np.ndarray, axis: int | str = "auto") -> int:
    """The array axis a slice-painted ``label`` was painted along: ``axis`` itself, or for ``"auto"`` the axis
    with the fewest painted slices (see module doc); shared by the annotated mask and the worker's
    suggested slice, so both name the same axis."""
    if axis == "auto":
        counts = [len(painted_slices(label, a)) for a in range(3)]
        axis = int(np.argmin(counts))
    if axis not in (0, 1, 2):
        raise SparseSegError(f"slice axis {axis!r} is not an axis of a 3D volume", "Use auto, 0 (k), 1 (j) or 2 (i).")
    return int(axis)


def slices_mask(label: np.ndarray, axis: int | str = "auto") -> tuple[np.ndarray, int, list[int]]:
    """``(mask, axis, slices)``: the annotated mask of a slice-painted label map (see module doc)."""
    label = np.asarray(label)
    if label.ndim != 3:
        raise SparseSegError(f"the annotation is {label.ndim}D (shape {label.shape})", "Give a 3D label map.")
    if not np.any(label > 0):
        raise SparseSegError(
            "the annotation has no painted voxel, so no slice is annotated",
            "Paint the structure on at least one slice (or use ROI boxes with --region boxes).",
        )
    axis = resolve_slice_axis(label, axis)
    slices = painted_slices(label, axis)
    mask = np.zeros(label.shape, bool)
    index: list = [slice(None)] * 3
    index[axis] = slices
    mask[tuple(index)] = True
    return mask, int(axis), slices


def boxes_mask(boxes: list[dict], geometry: Geometry) -> np.ndarray:
    """The annotated mask of ROI boxes in voxel or RAS coordinates (see module doc)."""
    from .schema import validate_boxes

    boxes = validate_boxes(boxes, "boxes")
    mask = np.zeros(geometry.shape, bool)
    for number, box in enumerate(boxes):
        if "ijk" in box:
            added = _ijk_box(np.asarray(box["ijk"], dtype=np.int64), geometry, mask)
        else:
            added = _ras_box(np.asarray(box["ras"], dtype=float), geometry, mask)
        if not added:
            corners = box.get("ijk", box.get("ras"))
            system = "voxel (i, j, k)" if "ijk" in box else "RAS"
            raise SparseSegError(
                f"ROI box {number + 1} ({system} corners {corners}) holds no voxel of the image "
                f"(size {geometry.size[0]} x {geometry.size[1]} x {geometry.size[2]} voxels, i x j x k)",
                "Give boxes inside the image: voxel corners from 0 to size-1, or RAS corners of an ROI drawn on it.",
            )
    return mask


def _ijk_box(corners: np.ndarray, geometry: Geometry, mask: np.ndarray) -> int:
    low = np.maximum(corners.min(axis=0), 0)
    high = np.minimum(corners.max(axis=0), np.asarray(geometry.size) - 1)
    if np.any(low > high):
        return 0
    (i0, j0, k0), (i1, j1, k1) = low, high
    mask[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = True
    return int((i1 - i0 + 1) * (j1 - j0 + 1) * (k1 - k0 + 1))


def _ras_box(corners: np.ndarray, geometry: Geometry, mask: np.ndarray) -> int:
    ras_low, ras_high = corners.min(axis=0), corners.max(axis=0)
    ijk_to_ras = geometry.ijk_to_ras()
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    cube = np.array([[x, y, z, 1.0] for x in (ras_low[0], ras_high[0]) for y in (ras_low[1], ras_high[1])
                     for z in (ras_low[2], ras_high[2])])
    ijk = (ras_to_ijk @ cube.T).T[:, :3]
    tolerance = 1e-6 * max(1.0, float(np.max(np.abs(corners))))
    low = np.maximum(np.ceil(ijk.min(axis=0) - 1e-6), 0).astype(int)
    high = np.minimum(np.floor(ijk.max(axis=0) + 1e-6), np.asarray(geometry.size) - 1).astype(int)
    if np.any(low > high):
        return 0
    (i0, j0, k0), (i1, j1, k1) = low, high
    jj, ii = np.meshgrid(np.arange(j0, j1 + 1), np.arange(i0, i1 + 1), indexing="ij")
    added = 0
    for k in range(k0, k1 + 1):  # slice by slice, so a large box never needs a huge coordinate array
        points = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        ras = (ijk_to_ras @ points)[:3]
        inside = np.all((ras >= ras_low[:, None] - tolerance) & (ras <= ras_high[:, None] + tolerance), axis=0)
        if inside.any():
            mask[k, j0 : j1 + 1, i0 : i1 + 1] |= inside.reshape(ii.shape)
            added += int(inside.sum())
    return added


def annotated_mask(region: dict, label: np.ndarray, geometry: Geometry, mask: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """``(annotated mask, description)`` for a validated ``region`` of a job (see :mod:`.schema`).

    ``mask`` is the array read from ``region["mask"]`` for the ``mask`` kind.
    """
    kind = region["kind"]
    if kind == "slices":
        result, axis, slices = slices_mask(label, region.get("axis", "auto"))
        shown = ", ".join(map(str, slices[:12])) + (", ..." if len(slices) > 12 else "")
        return result, f"{len(slices)} painted slice(s) along axis {axis} ({AXIS_NAMES[axis]}): {shown}"
    if kind == "boxes":
        result = boxes_mask(region["boxes"], geometry)
        return result, f"{len(region['boxes'])} ROI box(es), {int(result.sum())} voxels"
    if kind == "mask":
        if mask is None or mask.shape != geometry.shape:
            raise SparseSegError("the annotated mask is not on the image grid", "Export the mask with the image as reference.")
        result = np.asarray(mask) != 0
        return result, f"explicit mask, {int(result.sum())} voxels"
    return np.ones(geometry.shape, bool), "every voxel (full annotation)"


def whole_slice_axis(mask: np.ndarray) -> int | None:
    """The axis along which ``mask`` is a union of whole slices (a slice-painted annotation), or None (boxes,
    or slices along several axes). With several such axes, the one with the fewest annotated slices."""
    mask = np.asarray(mask, dtype=bool)
    found = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        any_, all_ = np.any(mask, axis=other), np.all(mask, axis=other)
        if any_.any() and np.array_equal(any_, all_):
            found.append((int(any_.sum()), axis))
    return min(found)[1] if found else None


def whole_slices_by_axis(mask: np.ndarray) -> dict[int, list[int]]:
    """``{axis: slices}`` when ``mask`` is exactly a union of whole slices, possibly across several axes (a user who
    painted axial slices and then corrected a sagittal one), else ``{}`` (boxes, scattered voxels, nothing).

    Each axis lists the slices annotated as a whole along it; an axis whose whole slices are all covered by the
    other axes' is left out (a full annotation is every axis's slices; it lists axis 0 alone)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not mask.any():
        return {}
    whole = {axis: [int(s) for s in np.flatnonzero(np.all(mask, axis=tuple(a for a in range(3) if a != axis)))]
             for axis in range(3)}
    union = np.zeros_like(mask)
    found: dict[int, list[int]] = {}
    for axis in range(3):
        if not whole[axis]:
            continue
        index: list = [slice(None)] * 3
        index[axis] = whole[axis]
        if union[tuple(index)].all():  # nothing these slices add
            continue
        union[tuple(index)] = True
        found[axis] = whole[axis]
    return found if np.array_equal(union, mask) else {}


def correction_planes(changed: np.ndarray, prefer: int | None = None, limit: int = 256) -> dict[int, list[int]]:
    """The fewest whole slices, along any of the three axes, that hold every ``True`` voxel of ``changed``:
    where a user edited a result in one or more slice views (an axial and a sagittal correction give one slice
    of each, not every axial slice the sagittal edit crosses). ``{axis: sorted slices}``, ``{}`` when nothing
    changed.

    Greedy: the slice holding most of the voxels still uncovered goes first (ties: axis ``prefer``, then the lower
    axis). Edits that need more than ``limit`` slices (an oblique view, the 3D view's scissors) raise an error.
    A label map cannot say which view an edit was made in: trims of several axial slices that all lie in one
    coronal plane (a flat boundary pulled back by one row) read as that coronal slice; the session's log line
    names the slices taken."""
    points = np.argwhere(np.asarray(changed, dtype=bool))
    planes: dict[int, set[int]] = {}
    while len(points):
        best = None
        for axis in range(3):
            counts = np.bincount(points[:, axis])
            index = int(np.argmax(counts))
            key = (int(counts[index]), axis == prefer, -axis)
            if best is None or key > best[0]:
                best = (key, axis, index)
        _, axis, index = best
        planes.setdefault(axis, set()).add(index)
        points = points[points[:, axis] != index]
        if sum(len(s) for s in planes.values()) > limit:
            raise SparseSegError(f"the edits lie on more than {limit} slices",
                                 "Correct whole slices in the axial, sagittal or coronal view of the volume (not an "
                                 "oblique view or the 3D view), a few at a time.")
    return {axis: sorted(slices) for axis, slices in sorted(planes.items())}


def single_view_axis(counts: list[int], job_axis: int | None) -> tuple[int, int | None]:
    """``(axis, other)`` for corrections of a method with one slice axis, from ``counts``: how many slices the new
    paint lies on across each axis. ``axis``: the job's axis, or without one (ROI boxes) the axis with the fewest
    slices (an axis with none says nothing). ``other``: an axis the paint lies on fewer slices across than the
    job's, i.e. the user corrected in another view, which this method cannot take (the caller says so in its own
    words); else None. One rule for the module's Continue and ``sparseseg run --continue``."""
    fewest = min(range(3), key=lambda a: (counts[a] == 0, counts[a], a))
    if job_axis is None:
        return fewest, None
    return job_axis, (fewest if 0 < counts[fewest] < counts[job_axis] else None)


def leading_axis(slices: dict[int, list[int]], label: np.ndarray) -> int:
    """Of whole slices across several axes (``{axis: slices}``, not empty), the axis that leads: the most slices,
    then the most object voxels of ``label`` on them (the larger outline carries more of the object: a hippocampus
    painted along its length holds both its parts), then the lower axis. One rule for the method, the job and
    the corrections' report."""
    foreground = np.asarray(label) > 0

    def painted_object(axis: int) -> int:
        return int(np.count_nonzero(np.take(foreground, slices[axis], axis=axis)))

    return max(slices, key=lambda a: (len(slices[a]), painted_object(a), -a))


def propagation_axis(annotated: np.ndarray, label: np.ndarray) -> int | None:
    """The slice axis of an annotated mask: the only one (:func:`whole_slice_axis`), or where whole slices lie across
    several axes (a correction in another view) the :func:`leading_axis`. None: no whole slices (boxes)."""
    axis = whole_slice_axis(annotated)
    if axis is not None:
        return axis
    slices = whole_slices_by_axis(annotated)
    return leading_axis(slices, label) if slices else None
