"""MRML nodes <-> numpy arrays with exact geometry, for the Slicer side of SparseSeg.

Conventions: arrays are ``(k, j, i)`` like everywhere in SparseSeg (``slicer.util.arrayFromVolume``
uses the same order); a node's ``IJKToRAS`` matrix is RAS, SparseSeg's :class:`~SparseSegLib.case.Geometry`
is LPS (what SimpleITK reads and writes): ``IJKToLPS = diag(-1, -1, 1, 1) @ IJKToRAS``. Geometry is taken
in the node's own coordinate frame; a result node is put under the volume's parent transform, so a
transformed volume and its result stay together.

Needs ``slicer`` (the application's, or the ``slicer-core`` wheel's) and ``vtk``; no Qt, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..case import Geometry
from ..errors import SparseSegError
from .text import tr as _  # named _ so that Slicer's lupdate_preprocess extracts the calls

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Anatomical slice orientations: the RAS axis a slice is perpendicular to.
ORIENTATION_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def _slicer():
    import slicer

    return slicer


def _vtk():
    import vtk

    return vtk


def _numpy_support():
    from vtk.util import numpy_support

    return numpy_support


def matrix_to_array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_to_matrix(array: np.ndarray):
    matrix = _vtk().vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijk_to_ras(volume_node) -> np.ndarray:
    """The volume's 4x4 IJK-to-RAS matrix as numpy."""
    matrix = _vtk().vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix_to_array(matrix)


def volume_geometry(volume_node) -> Geometry:
    """The :class:`Geometry` (LPS) of a volume node's voxel grid."""
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        raise SparseSegError(_("the input volume has no image data"), _("Load a 3D volume and select it as input."))
    size = image.GetDimensions()
    if min(size) < 2:
        raise SparseSegError(_("the input volume is {i} x {j} x {k} voxels, not 3D").format(i=size[0], j=size[1], k=size[2]),
                             _("SparseSeg segments 3D volumes; a single slice cannot be propagated."))
    return Geometry.from_ijk_to_lps(RAS_TO_LPS @ ijk_to_ras(volume_node), size)


def volume_array(volume_node) -> np.ndarray:
    """The voxels of a scalar volume node, ``(k, j, i)`` (a view: do not modify)."""
    image = volume_node.GetImageData()
    if image is None:
        raise SparseSegError(_("volume {name} has no image data").format(name=volume_node.GetName()),
                             _("Select a loaded volume."))
    if image.GetNumberOfScalarComponents() != 1:
        raise SparseSegError(_("volume {name} has {count} components").format(
            name=volume_node.GetName(), count=image.GetNumberOfScalarComponents()),
            _("Use a scalar volume (e.g. Vector to Scalar Volume module for RGB images)."))
    i, j, k = image.GetDimensions()
    return _numpy_support().vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)


def image_data_from_array(array: np.ndarray, oriented: bool = False, ras_matrix: np.ndarray | None = None):
    """A ``vtkImageData`` (or ``vtkOrientedImageData`` placed by ``ras_matrix``) holding a copy of ``array``."""
    slicer, vtk, numpy_support = _slicer(), _vtk(), _numpy_support()
    array = np.ascontiguousarray(array)
    image = slicer.vtkOrientedImageData() if oriented else vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    vtk_type = numpy_support.get_vtk_array_type(array.dtype)
    image.AllocateScalars(vtk_type, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.ravel()
    if oriented and ras_matrix is not None:
        image.SetImageToWorldMatrix(array_to_matrix(ras_matrix))
    return image


def set_volume_from_array(volume_node, array: np.ndarray, ras_matrix: np.ndarray) -> None:
    """Replace a volume node's voxels and geometry (one Modified, so views update once)."""
    image = image_data_from_array(array)
    was = volume_node.StartModify()
    volume_node.SetIJKToRASMatrix(array_to_matrix(ras_matrix))
    volume_node.SetAndObserveImageData(image)
    volume_node.EndModify(was)


# --------------------------------------------------------------------------------------------------
# Segmentations


@dataclass(frozen=True)
class SegmentClass:
    """One class of the user's annotation: label value, the source segment, its name and colour."""

    value: int
    segment_id: str
    name: str
    color: tuple[float, float, float]

    def job_entry(self) -> dict:
        return {"name": self.name, "color": [float(min(max(c, 0.0), 1.0)) for c in self.color]}


def annotation_classes(segmentation_node) -> list[SegmentClass]:
    """The segments of an annotation node as classes 1..N in segment order."""
    if segmentation_node is None:
        raise SparseSegError(_("no annotation segmentation selected"), _(
            "Paint the structures (one segment per class) with the Segment Editor and select that segmentation."))
    segmentation = segmentation_node.GetSegmentation()
    count = segmentation.GetNumberOfSegments()
    if count == 0:
        raise SparseSegError(_("the annotation {name} has no segment").format(name=segmentation_node.GetName()),
                             _("Add one segment per class in the Segment Editor and paint each on a slice."))
    if count > 255:
        raise SparseSegError(_("the annotation has {count} segments; at most 255 classes are supported").format(count=count),
                             _("Remove segments you do not want segmented."))
    classes = []
    for index in range(count):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        classes.append(SegmentClass(index + 1, segment_id, segment.GetName() or segment_id,
                                    tuple(float(c) for c in segment.GetColor())))
    return classes


def _remove_temporary_volume(node) -> None:
    slicer = _slicer()
    scene = node.GetScene() or slicer.mrmlScene
    display = node.GetDisplayNode()
    color = display.GetColorNode() if display is not None else None
    for extra in (display, node):
        if extra is not None and extra.GetScene() is not None:
            scene.RemoveNode(extra)
    # a color table that ExportSegmentsToLabelmapNode made for this export only
    if color is not None and color.GetScene() is not None and color.GetName().startswith("__SparseSeg"):
        scene.RemoveNode(color)


def export_segments(segmentation_node, segment_ids: list[str], volume_node) -> np.ndarray:
    """Segments rasterised on the volume's grid as one uint8 label map: ``segment_ids[n]`` -> ``n + 1``.

    Uses Slicer's own export (resampling, transforms between the nodes); the segmentation node is
    only read. Temporary nodes are removed again.
    """
    slicer, vtk = _slicer(), _vtk()
    scene = volume_node.GetScene() or slicer.mrmlScene
    geometry = volume_geometry(volume_node)
    if not segment_ids:
        return np.zeros(geometry.shape, np.uint8)
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__SparseSegExport")
    try:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, volume_node):
            raise SparseSegError(_("cannot rasterise the segmentation {segmentation} on the volume {volume}").format(
                segmentation=segmentation_node.GetName(), volume=volume_node.GetName()),
                _("Check that the segmentation overlaps the volume (same patient space)."))
        image = labelmap.GetImageData()
        array = volume_array(labelmap).astype(np.uint8) if image is not None else np.zeros(geometry.shape, np.uint8)
    finally:
        _remove_temporary_volume(labelmap)
    if array.shape != geometry.shape:
        raise SparseSegError(_("the exported segmentation has shape {shape}, the volume {volume}").format(
            shape=array.shape, volume=geometry.shape), _("This is a bug: please report it."))
    return array


def export_annotation(segmentation_node, volume_node) -> tuple[np.ndarray, list[SegmentClass]]:
    """The user's annotation as ``(label map (k, j, i) uint8, classes)`` on the volume's grid."""
    classes = annotation_classes(segmentation_node)
    label = export_segments(segmentation_node, [c.segment_id for c in classes], volume_node)
    return label, classes


def binary_labelmap_name() -> str:
    converter = _slicer().vtkSegmentationConverter
    getter = getattr(converter, "GetBinaryLabelmapRepresentationName", None) or \
        converter.GetSegmentationBinaryLabelmapRepresentationName
    return getter()


def ensure_segments(segmentation_node, classes: list[SegmentClass], prefix: str = "SparseSeg_") -> dict[int, str]:
    """Make sure the result node has one segment per class (ids ``SparseSeg_<value>``) with the class's
    name and colour; returns ``{value: segment id}``. Existing segments keep their voxels."""
    segmentation = segmentation_node.GetSegmentation()
    ids = {}
    for cls in classes:
        segment_id = f"{prefix}{cls.value}"
        segment = segmentation.GetSegment(segment_id)
        if segment is None:
            segmentation.AddEmptySegment(segment_id, cls.name, list(cls.color))
            segment = segmentation.GetSegment(segment_id)
        segment.SetName(cls.name)
        if hasattr(segment, "SetNameAutoGenerated"):
            segment.SetNameAutoGenerated(False)
        if hasattr(segment, "SetColorAutoGenerated"):
            segment.SetColorAutoGenerated(False)
        segment.SetColor(*cls.color)
        ids[cls.value] = segment_id
    return ids


def write_label_to_segments(segmentation_node, label: np.ndarray, ras_matrix: np.ndarray,
                            segment_ids: dict[int, str], tags: dict[str, str] | None = None) -> None:
    """Put a label map into the class segments in one step: all of them share one binary labelmap layer
    (segment ``value`` is label value ``value``), updated in place when it already exists, so views,
    closed surfaces and undo see one modification. Costs one copy of the label map."""
    rep = binary_labelmap_name()
    segmentation = segmentation_node.GetSegmentation()
    new_image = image_data_from_array(np.asarray(label, dtype=np.uint8), oriented=True, ras_matrix=ras_matrix)
    segments = {value: segmentation.GetSegment(segment_id) for value, segment_id in segment_ids.items()}
    layers = {id(segment.GetRepresentation(rep)) if segment.GetRepresentation(rep) is not None else None
              for segment in segments.values()}
    shared = next(iter(segments.values())).GetRepresentation(rep) if segments else None
    in_place = (shared is not None and len(layers) == 1
                and all(segment.GetLabelValue() == value for value, segment in segments.items())
                and _same_other_users(segmentation, shared, set(segment_ids.values()), rep))
    was = segmentation_node.StartModify()
    try:
        if hasattr(segmentation, "GetSourceRepresentationName") and segmentation.GetSourceRepresentationName() != rep:
            segmentation.SetSourceRepresentationName(rep)
        if in_place:
            shared.DeepCopy(new_image)
            shared.Modified()
        else:
            for value, segment in segments.items():
                segment.SetLabelValue(int(value))
                segment.AddRepresentation(rep, new_image)
            new_image.Modified()
        for segment in segments.values():
            for key, text in (tags or {}).items():
                segment.SetTag(key, str(text))
    finally:
        segmentation_node.EndModify(was)


def _same_other_users(segmentation, layer, ours: set[str], rep: str) -> bool:
    """True when no segment other than ours uses ``layer`` (then it may be overwritten in place)."""
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        if segment_id not in ours and segmentation.GetSegment(segment_id).GetRepresentation(rep) is layer:
            return False
    return True


def segment_fingerprint(segmentation_node, tag_keys: tuple[str, ...] = ()) -> list[tuple]:
    """Everything a user would call 'the annotation': per segment its id, name, colour, label value,
    the given tags, and the SHA-256 of its binary labelmap voxels with their extent and geometry.
    For checks that a node is unchanged bit for bit."""
    import hashlib

    rep = binary_labelmap_name()
    segmentation = segmentation_node.GetSegmentation()
    result = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(rep)
        digest = None
        if image is not None and image.GetPointData().GetScalars() is not None:
            voxels = _numpy_support().vtk_to_numpy(image.GetPointData().GetScalars())
            matrix = _vtk().vtkMatrix4x4()
            image.GetImageToWorldMatrix(matrix)
            header = repr((image.GetExtent(), matrix_to_array(matrix).tolist())).encode()
            digest = hashlib.sha256(voxels.tobytes() + header).hexdigest()
        tags = tuple((key, segment_tag(segment, key)) for key in tag_keys)
        result.append((segment_id, segment.GetName(), tuple(segment.GetColor()), segment.GetLabelValue(), tags, digest))
    return result


def segment_tag(segment, key: str) -> str | None:
    """The value of a segment tag, or None when the segment has no such tag."""
    value = _vtk().reference("")
    return str(value) if segment.GetTag(key, value) else None


# --------------------------------------------------------------------------------------------------
# Slice orientation and ROI boxes


def array_axis_for_orientation(volume_node, orientation: str) -> int | str:
    """The array axis (0 = k, 1 = j, 2 = i) whose slices are ``orientation`` ("axial", "coronal",
    "sagittal") for this volume's directions, or "auto"."""
    if orientation in (None, "", "auto"):
        return "auto"
    if orientation not in ORIENTATION_AXES:
        raise SparseSegError(_("unknown slice orientation {orientation}").format(orientation=repr(orientation)),
                             _("Use auto, axial, coronal or sagittal."))
    directions = ijk_to_ras(volume_node)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0)
    ras_axis = ORIENTATION_AXES[orientation]
    ijk_axis = int(np.argmax(np.abs(directions[ras_axis, :])))  # the voxel axis most along that RAS axis
    return 2 - ijk_axis


def roi_ras_boxes(roi_nodes, volume_node) -> list[dict]:
    """ROI markups as job boxes (``{"ras": [[low], [high]]}`` in the volume's coordinate frame).

    A rotated ROI becomes its axis-aligned bounding box. ROIs and volume may sit under (linear)
    transforms: corners go through world coordinates into the volume's frame.
    """
    boxes = []
    to_volume = np.eye(4)
    parent = volume_node.GetParentTransformNode()
    if parent is not None:
        matrix = _vtk().vtkMatrix4x4()
        if not parent.IsTransformToWorldLinear():
            raise SparseSegError(_("the volume is under a non-linear transform"), _("Harden the transform on the volume first."))
        parent.GetMatrixTransformToWorld(matrix)
        to_volume = np.linalg.inv(matrix_to_array(matrix))
    for roi in roi_nodes:
        if roi is None:
            continue
        bounds = [0.0] * 6
        roi.GetRASBounds(bounds)  # world coordinates, axis-aligned
        if bounds[1] < bounds[0]:
            continue
        corners = np.array([[x, y, z, 1.0] for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]])
        local = (to_volume @ corners.T).T[:, :3]
        boxes.append({"ras": [local.min(axis=0).round(6).tolist(), local.max(axis=0).round(6).tolist()]})
    if not boxes:
        raise SparseSegError(_("no ROI box to annotate"),
                             _("Place one or more ROI markups (Markups > ROI) over the regions you painted."))
    return boxes
