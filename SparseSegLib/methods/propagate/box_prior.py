"""Where an object annotated in ROI boxes goes beyond them: each box face's paint registered outwards.

Boxes have no whole slices to register, so before this the network round ran alone and its argmax was the result.
A network that has seen only the voxels of a few boxes calls much of the similar tissue around them object: on the
interactive benchmark's development scans, three boxes holding 57-78 % of the object came back 2.6 to 15 times the
object's volume, far worse than the boxes' paint alone (docs/results/interactive.md, "Thirtieth session").

Here the object leaves a box only where its paint touches the box's surface, as the slice path's object leaves its
outermost painted slice: every flat patch of the boxes' surface whose paint holds object (a box's face, or the part
of it another box does not cover) is a painted slice from which the same demons chain
(:func:`~SparseSegLib.engine.propagation.propagate_slices`) carries the label outwards along the face's normal,
trimmed by the painted intensities and fading at ``open_end`` of the face outline's equivalent radii. The chains' maps, the paint inside the boxes, play the registration's part in the
network round: far negatives beyond them, and the average fusion that keeps the network near them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...engine.intensity_gate import IntensityEvidence
from ...engine.propagation import PropagationSettings, demons_levels_for, open_end_reach, propagate_slices
from .volume import PaintedVolume

#: Slices a face's chain runs, in units of its open-end reach: the fade is exp(-(d / reach)^2), 0.02 at 2 reaches.
CHAIN_REACHES = 2.0


@dataclass(frozen=True)
class Face:
    """One flat patch of the annotated region's surface: the array ``axis`` it is normal to, the ``side`` it faces
    (-1: towards index 0, +1: away from it), its index along ``axis``, its bounding rectangle on the other two axes
    and which voxels of that rectangle lie on the surface (``patch``)."""

    axis: int
    side: int
    index: int
    rectangle: tuple[slice, slice]
    patch: np.ndarray


def box_faces(annotated: np.ndarray) -> Iterator[Face]:
    """The annotated region's surface, split into flat patches: for each axis and side, each slice holding
    annotated voxels whose neighbour on that side is not annotated (one face per side of a lone box; overlapping
    boxes give each its own visible parts). The volume's edge is no exit."""
    for axis in range(3):
        moved = np.moveaxis(annotated, axis, 0)
        for side in (-1, 1):
            beyond = np.ones_like(moved)
            if side > 0:
                beyond[:-1] = moved[1:]
            else:
                beyond[1:] = moved[:-1]
            surface = moved & ~beyond
            for index in np.flatnonzero(surface.any(axis=(1, 2))):
                rows, cols = ndimage.find_objects(surface[index].astype(np.int8))[0]
                yield Face(axis, side, int(index), (rows, cols), surface[index][rows, cols].copy())


def _oriented(array: np.ndarray, face: Face, depth: int, margin: int) -> np.ndarray:
    """``array``'s slab beyond ``face`` (``depth`` slices, the face slice first), the face's normal as axis 0,
    in-plane the box's rectangle grown by ``margin`` voxels (the chain may move sideways)."""
    moved = np.moveaxis(array, face.axis, 0)
    rows, cols = (slice(max(0, r.start - margin), r.stop + margin) for r in face.rectangle)
    if face.side > 0:
        return moved[face.index:face.index + depth, rows, cols]
    return moved[max(0, face.index - depth + 1):face.index + 1, rows, cols][::-1]


def face_chain(volume: PaintedVolume, face: Face, num_classes: int, scale: float, demons: tuple[int, float],
               evidence: IntensityEvidence | None, should_stop: Callable[[], bool] | None = None,
               end_shape: str = "cut") -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
    """The foreground maps ``(C - 1, depth, rows, cols)`` carried outwards from ``face`` and a function that
    gives the same slab of a volume-shaped array (to place them back); None where the face's paint holds no
    object or nothing lies beyond it."""
    spacing = (volume.spacing[face.axis],) + tuple(volume.spacing[a] for a in range(3) if a != face.axis)
    moved_label = np.moveaxis(volume.label, face.axis, 0)  # zero outside the annotated voxels
    outline = np.where(face.patch, moved_label[face.index][face.rectangle], 0)
    if not outline.any():
        return None
    # ``scale`` 0: never fade, as for painted slices (the chain runs to the volume's edge)
    reach = open_end_reach(outline, spacing, scale) if scale > 0 else None
    depth = moved_label.shape[0] if reach is None else 1 + int(math.ceil(CHAIN_REACHES * reach))
    margin = max(outline.shape)
    image = _oriented(volume.image, face, depth, margin)
    if image.shape[0] < 2:
        return None
    label = np.zeros(image.shape, np.uint8)
    rows, cols = (slice(min(r.start, margin), min(r.start, margin) + r.stop - r.start) for r in face.rectangle)
    label[0][rows, cols] = outline  # the patch's paint only: the rest of the slice is not where the object leaves
    trim = None
    if evidence is not None:
        trim = IntensityEvidence(np.ascontiguousarray(_oriented(evidence.object_likelihood, face, depth, margin)),
                                 np.ascontiguousarray(_oriented(evidence.background_likelihood, face, depth, margin))).trim
    settings = PropagationSettings(demons[0], demons[1], levels=demons_levels_for(spacing))
    maps = propagate_slices(np.ascontiguousarray(image), label, [0], num_classes, settings,
                            should_stop=should_stop, open_end_reach=None if reach is None else lambda start: reach,
                            end_shape=end_shape,
                            refine=trim)
    return maps[1:], lambda array: _oriented(array, face, depth, margin)


def box_prior(volume: PaintedVolume, num_classes: int, scale: float, demons: tuple[int, float],
              evidence: IntensityEvidence | None = None, should_stop: Callable[[], bool] | None = None,
              end_shape: str = "cut") -> np.ndarray:
    """Class probabilities ``(C, k, j, i)`` on ``volume``'s crop: the paint inside the boxes, outside them the
    largest of the face chains' (:func:`face_chain`) per class, background the rest. ``evidence``: the painted
    intensities trim each chain as it travels (the slice path's ``intensity=chain``); ``scale`` (``open_end``, 0:
    never fade) and ``end_shape`` as the slices' (:func:`~SparseSegLib.engine.propagation.propagate_slices`)."""
    foreground = np.zeros((num_classes - 1,) + volume.label.shape, np.float32)
    for face in box_faces(volume.annotated):
        chain = face_chain(volume, face, num_classes, scale, demons, evidence, should_stop, end_shape)
        if chain is None:
            continue
        maps, slab_of = chain
        for value in range(num_classes - 1):
            view = slab_of(foreground[value])  # a view: written in place
            np.maximum(view, maps[value], out=view)
    total = foreground.sum(0)
    foreground /= np.maximum(total, 1.0)[None]
    prior = np.concatenate([(1.0 - np.minimum(total, 1.0))[None], foreground]).astype(np.float32)
    prior[:, volume.annotated] = np.eye(num_classes, dtype=np.float32)[volume.label[volume.annotated]].T  # the paint
    return prior
