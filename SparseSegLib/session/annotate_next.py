"""Annotate next, Slicer side: where a round's suggested slice lies in the scene, and the jump to it.

The worker names the slice it is least sure of as an array axis and index (:mod:`..jobs.suggestion`).
A user thinks in views and planes, so here that becomes a point in world RAS (the uncertainty's centre
on that slice, or the slice's centre), the slice's normal, and its anatomical plane ("axial", ...);
:func:`jump_slice_views` then moves Slicer's slice views there. MRML only (no Qt), so the headless tests
run it on a real scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SparseSegError
from ..jobs.regions import AXIS_NAMES
from ..jobs.suggestion import SuggestedSlice
from .mrml import ORIENTATION_AXES, matrix_to_array
from .text import tr as _  # named _ so that Slicer's lupdate_preprocess extracts the calls

#: A slice view shows the suggested slice when its normal is within this angle of the slice's normal.
PARALLEL_DEGREES = 1.0


@dataclass(frozen=True)
class SliceSuggestion:
    """The slice to paint next, placed in the scene.

    ``axis`` (0 = k, 1 = j, 2 = i) and ``index`` name the slice in the volume's voxels; ``ras`` is a world
    RAS point on it (where views are centred), ``normal`` its unit normal in world RAS, ``orientation`` the
    anatomical plane closest to it; ``score`` and ``round`` are as the worker wrote them.
    """

    axis: int
    index: int
    ras: tuple[float, float, float]
    normal: tuple[float, float, float]
    orientation: str
    score: float | None = None
    round: int | None = None

    def describe(self) -> str:
        """``axial slice 14 (k = 14)``: what the module's status line shows."""
        return _("{plane} slice {index} ({axis} = {index})").format(plane=plane_name(self.orientation), index=self.index,
                                                                     axis=AXIS_NAMES[self.axis])


def plane_name(orientation: str) -> str:
    """The shown name of an anatomical plane (``orientation`` stays English: code compares it)."""
    names = {"axial": _("axial"), "coronal": _("coronal"), "sagittal": _("sagittal")}
    return names.get(orientation, orientation)


def describe_jump(suggestion: SliceSuggestion, views: list[str]) -> str:
    """The log line after a jump: the slice, and the views that show it (or that none has its orientation)."""
    if views:
        return _("annotate next: {slice}, shown in the {views} view").format(slice=suggestion.describe(),
                                                                             views=", ".join(views))
    return _("annotate next: {slice}; no slice view shows {plane} slices (set one to {plane})").format(
        slice=suggestion.describe(), plane=plane_name(suggestion.orientation))


def orientation_name(normal) -> str:
    """The anatomical plane (sagittal, coronal, axial) whose normal is closest to ``normal`` (RAS)."""
    largest = int(np.argmax(np.abs(np.asarray(normal, dtype=float))))
    return next(name for name, axis in ORIENTATION_AXES.items() if axis == largest)


def to_world_matrix(node) -> np.ndarray:
    """The 4x4 matrix from ``node``'s RAS to world RAS (its parent transforms; identity without one)."""
    parent = node.GetParentTransformNode() if node is not None else None
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise SparseSegError(_("the volume is under a non-linear transform, so a slice of it is not a plane in the views"),
                             _("Harden the transform on the volume first."))
    import vtk

    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return matrix_to_array(matrix)


def locate(suggested: SuggestedSlice, ras_matrix: np.ndarray, shape: tuple[int, int, int],
           to_world: np.ndarray | None = None) -> SliceSuggestion:
    """Place a worker's suggestion in world RAS.

    ``ras_matrix`` is the volume's IJK-to-RAS, ``shape`` its array shape ``(k, j, i)``; ``to_world`` its
    parent transform (:func:`to_world_matrix`). The point is the suggestion's ``ijk`` when it lies on the
    slice, else the slice's centre voxel.
    """
    axis, index = suggested.axis, suggested.index
    if not 0 <= index < shape[axis]:
        raise SparseSegError(_("the suggested slice {index} along {axis} is outside the volume ({count} slices)").format(
            index=index, axis=AXIS_NAMES[axis], count=shape[axis]), _("This is a bug: please report it with the job folder."))
    kji = [(n - 1) / 2.0 for n in shape]
    kji[axis] = index
    if suggested.ijk is not None and suggested.ijk[2 - axis] == index:
        kji = [suggested.ijk[2], suggested.ijk[1], suggested.ijk[0]]
    world = (np.eye(4) if to_world is None else np.asarray(to_world, dtype=float)) @ np.asarray(ras_matrix, dtype=float)
    ras = world @ np.array([kji[2], kji[1], kji[0], 1.0])
    # the slice's normal: the direction across slices, i.e. the plane's two in-plane directions crossed
    in_plane = [world[:3, 2 - a] for a in range(3) if a != axis]
    normal = np.cross(in_plane[0], in_plane[1])
    normal /= np.linalg.norm(normal)
    return SliceSuggestion(axis, index, tuple(float(v) for v in ras[:3]), tuple(float(v) for v in normal),
                           orientation_name(normal), suggested.score, suggested.round)


def jump_slice_views(scene, suggestion: SliceSuggestion) -> list[str]:
    """Centre every slice view on the suggestion's point; return the names of the views that now show the
    suggested slice (their plane is parallel to it), e.g. ``["Red"]``; empty when no view has that orientation.

    Uses the static ``vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, CenteredJumpSlice)``: checked in
    Slicer/Slicer ``Libs/MRML/Core/vtkMRMLSliceNode.cxx``, it calls ``JumpSliceByCentering`` on every
    slice node of the scene (what the Markups module's "jump slices, centered" does), so the uncertain
    region is in the middle of each view and the matching view lands on the slice itself.
    """
    import slicer

    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *suggestion.ras, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    showing = []
    cosine = np.cos(np.deg2rad(PARALLEL_DEGREES))
    for number in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(number, "vtkMRMLSliceNode")
        normal = matrix_to_array(node.GetSliceToRAS())[:3, 2]
        if abs(float(np.dot(normal / np.linalg.norm(normal), suggestion.normal))) >= cosine:
            showing.append(node.GetLayoutName() or node.GetName())
    return showing
