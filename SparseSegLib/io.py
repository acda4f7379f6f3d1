"""Reading and writing images, label maps and Slicer segmentations with their exact geometry.

SimpleITK does the pixel IO for NIfTI and NRRD (and anything else ITK reads); ``slicerio`` reads and
writes ``.seg.nrrd`` with segment names, colors and layers as 3D Slicer stores them. Every reader
validates what a method would otherwise choke on later (2D/4D images, NaNs, mismatched grids) and
raises :class:`~SparseSegLib.errors.SparseSegError` with a hint.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .case import Case, Geometry
from .errors import SparseSegError
from .jobs.atomic import atomic_path

SEGMENTATION_SUFFIX = ".seg.nrrd"


def is_segmentation_file(path: str | os.PathLike) -> bool:
    """True for Slicer segmentation files, which carry segment names and colors."""
    return str(path).lower().endswith(SEGMENTATION_SUFFIX)


def _require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise SparseSegError(f"{what} not found: {path}", "Check the path (relative paths start from the current folder).")
    if path.is_dir():
        raise SparseSegError(f"{what} is a folder, not a file: {path}", "Give the path of an image file (.nii.gz, .nrrd, ...).")
    return path


def geometry_of(image: sitk.Image) -> Geometry:
    """The :class:`Geometry` of a SimpleITK image."""
    return Geometry(
        size=tuple(int(s) for s in image.GetSize()),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of ``array`` (in ``(k, j, i)`` order) placed at ``geometry``."""
    if array.shape != geometry.shape:
        raise SparseSegError(
            f"array shape {array.shape} does not fit geometry {geometry.shape}", "This is a bug: please report it."
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def _read_sitk(path: Path, what: str) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise SparseSegError(
            f"cannot read {what} {path}: not an image format SimpleITK understands ({first_line[:120]})",
            "Give a NIfTI (.nii/.nii.gz) or NRRD (.nrrd) volume; convert DICOM series in 3D Slicer first.",
        ) from None


def channel_count(image: sitk.Image) -> int:
    """Channels of a multi-channel image: the 4th dimension's size (MSD's 4D NIfTI) or the pixel's components."""
    if image.GetDimension() == 4:
        return int(image.GetSize()[3])
    return int(image.GetNumberOfComponentsPerPixel())


def select_channel(image: sitk.Image, channel: int | None, path: Path) -> sitk.Image:
    """One 3D scalar channel of ``image`` (a 4D or vector image); a one-channel image needs no ``channel``.

    Why here: MSD's multi-modal tasks (e.g. BrainTumour: FLAIR, T1w, t1gd, T2w; Prostate: T2, ADC) store the
    modalities as a 4th dimension, while every method segments one 3D scalar volume.
    """
    count = channel_count(image)
    if image.GetDimension() not in (3, 4) or (image.GetDimension() == 4 and image.GetNumberOfComponentsPerPixel() > 1):
        return image  # left for _require_3d to explain
    if channel is None:
        if count > 1:
            raise SparseSegError(
                f"image {path} has {count} channels (size {image.GetSize()}); SparseSeg segments one 3D scalar volume",
                "Choose one with --channel N (0 to {}), or extract it first (in 3D Slicer: Vector to Scalar "
                "Volume).".format(count - 1),
            )
        channel = 0
    if not 0 <= channel < count:
        raise SparseSegError(f"channel {channel} asked of image {path}, which has {count} channel(s)",
                             f"Give --channel from 0 to {count - 1}.")
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        return sitk.Extract(image, size[:3] + [0], [0, 0, 0, channel])
    if image.GetNumberOfComponentsPerPixel() > 1:
        return sitk.VectorIndexSelectionCast(image, channel)
    return image


def _require_3d(image: sitk.Image, path: Path, what: str) -> None:
    dimension = image.GetDimension()
    size = image.GetSize()
    if dimension == 2 or (dimension == 3 and min(size) == 1 and what == "image"):
        raise SparseSegError(
            f"{what} {path} is 2D (size {size}); SparseSeg segments 3D volumes",
            "Give a 3D volume; a single slice cannot be propagated.",
        )
    if dimension == 4 or image.GetNumberOfComponentsPerPixel() > 1:
        raise SparseSegError(
            f"{what} {path} has {dimension} dimensions and {image.GetNumberOfComponentsPerPixel()} components "
            f"(size {size}); SparseSeg needs one 3D scalar volume",
            "Extract one time point / channel first (e.g. in 3D Slicer: Sequences or Vector to Scalar Volume).",
        )
    if dimension != 3:
        raise SparseSegError(f"{what} {path} has {dimension} dimensions", "Give a 3D volume.")


def read_image(path: str | os.PathLike, channel: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a 3D scalar image as float32 ``(k, j, i)`` with its geometry; rejects NaN/inf voxels.

    ``channel`` picks one channel of a multi-channel (4D or vector) image; None accepts one-channel images only.
    """
    path = _require_file(path, "image")
    image = select_channel(_read_sitk(path, "image"), channel, path)
    _require_3d(image, path, "image")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise SparseSegError(
            f"image {path} has {bad} NaN or infinite voxels",
            "Replace them before segmenting (e.g. SimpleITK or numpy: np.nan_to_num(array, nan=array_min)).",
        )
    return array, geometry_of(image)


def read_label(path: str | os.PathLike, geometry: Geometry | None = None) -> np.ndarray:
    """Read an integer label map; when ``geometry`` is given it must be the image's voxel grid."""
    path = _require_file(path, "label map")
    image = _read_sitk(path, "label map")
    _require_3d(image, path, "label map")
    label_geometry = geometry_of(image)
    if geometry is not None and not geometry.matches(label_geometry):
        raise SparseSegError(
            f"label map {path} is not on the image's voxel grid ({label_geometry.describe_difference(geometry)})",
            "Resample the label map to the image (e.g. in 3D Slicer: Resample Image (BRAINS) with the image as reference).",
        )
    array = sitk.GetArrayFromImage(image)
    return _as_label_values(array, path)


def _as_label_values(array: np.ndarray, path: Path | str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise SparseSegError(
                f"label map {path} holds non-integer values", "Give a label map with integer class values (0 = background)."
            )
    if array.size and array.min() < 0:
        raise SparseSegError(f"label map {path} holds negative values", "Class values must be 0 (background) or positive.")
    if array.size and array.max() > 255:
        raise SparseSegError(
            f"label map {path} has class value {int(array.max())}; at most 255 classes are supported",
            "Relabel the classes to 1..N.",
        )
    return array.astype(np.uint8)


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``array`` at ``geometry``; the format follows the extension (.nii.gz, .nrrd, ...).

    Written through :func:`~SparseSegLib.jobs.atomic.atomic_path` (temporary name, then rename), so a reader
    (Slicer polling a round) never sees half a file. Not fsynced here: the round writer fsyncs the files a
    round lists before committing it, and other callers write files that are cheap to make again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, sync=False) as temporary:
            sitk.WriteImage(to_sitk(array, geometry), str(temporary), compress)
    except (RuntimeError, OSError) as error:
        raise SparseSegError(f"cannot write {path}: {str(error).strip().splitlines()[-1][:160]}",
                             "Check that the folder is writable and the disk is not full.") from None
    return path


def read_segmentation(path: str | os.PathLike) -> tuple[np.ndarray, Geometry, dict[int, str], dict[int, tuple]]:
    """Read a Slicer ``.seg.nrrd``: label map ``(k, j, i)``, geometry, class names and colors.

    Segments are numbered 1..N in file order; overlapping segments (several layers) are collapsed with
    later segments winning, as Slicer's own export does.
    """
    import slicerio

    path = _require_file(path, "segmentation")
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # slicerio/pynrrd raise many types for a broken header
        raise SparseSegError(f"cannot read segmentation {path}: {error}", "Save it again from 3D Slicer as .seg.nrrd.") from None
    voxels = segmentation["voxels"]
    spatial_shape = voxels.shape[-3:]
    geometry = Geometry.from_ijk_to_lps(segmentation["ijkToLPS"], spatial_shape)
    label = np.zeros(spatial_shape, np.uint8)
    names: dict[int, str] = {}
    colors: dict[int, tuple] = {}
    for value, segment in enumerate(segmentation.get("segments", []), start=1):
        label[slicerio.segment_mask(segmentation, segment)] = value
        names[value] = segment.get("name", segment.get("id", f"Segment_{value}"))
        if "color" in segment:
            colors[value] = tuple(float(c) for c in segment["color"])
    return np.ascontiguousarray(label.transpose(2, 1, 0)), geometry, names, colors


def write_segmentation(
    label: np.ndarray,
    geometry: Geometry,
    path: str | os.PathLike,
    class_names: dict[int, str],
    class_colors: dict[int, tuple] | None = None,
) -> Path:
    """Write a label map as a Slicer ``.seg.nrrd`` with one named, colored segment per class."""
    import slicerio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    segmentation = slicerio.create_segmentation(geometry.size, geometry.ijk_to_lps())
    voxels_ijk = np.asarray(label).transpose(2, 1, 0)
    for value in sorted(set(class_names) | set(int(v) for v in np.unique(label) if v)):
        segment = {"id": f"Segment_{value}", "name": class_names.get(value, f"Segment_{value}")}
        if class_colors and value in class_colors:
            segment["color"] = list(class_colors[value])
        slicerio.add_segment(segmentation, voxels_ijk == value, segment)
    with atomic_path(path, sync=False) as temporary:
        slicerio.write_segmentation(str(temporary), segmentation)
    return path


def read_annotation(path: str | os.PathLike, geometry: Geometry) -> tuple[np.ndarray, dict[int, str], dict[int, tuple]]:
    """Read a label map or ``.seg.nrrd`` that annotates an image with ``geometry``."""
    if is_segmentation_file(path):
        label, label_geometry, names, colors = read_segmentation(path)
        if not geometry.matches(label_geometry):
            raise SparseSegError(
                f"segmentation {path} is not on the image's voxel grid ({label_geometry.describe_difference(geometry)})",
                "In 3D Slicer, export the segmentation with the image as reference geometry.",
            )
        return label, names, colors
    return read_label(path, geometry), {}, {}


def load_case(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike | None = None,
    case_id: str | None = None,
    class_names: dict[int, str] | None = None,
    channel: int | None = None,
) -> Case:
    """Read an image (``channel`` of a multi-channel one) and optionally its label map or segmentation."""
    image, geometry = read_image(image_path, channel)
    label = None
    names = dict(class_names or {})
    colors: dict[int, tuple] = {}
    if label_path is not None:
        label, file_names, colors = read_annotation(label_path, geometry)
        names = {**names, **file_names}
    return Case(
        case_id=case_id or case_id_from_path(image_path),
        image=image,
        geometry=geometry,
        label=label,
        class_names=names,
        class_colors=colors,
    )


def case_id_from_path(path: str | os.PathLike) -> str:
    """File name without image extensions: ``hippocampus_001.nii.gz`` -> ``hippocampus_001``."""
    name = Path(path).name
    for suffix in (SEGMENTATION_SUFFIX, ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_path_like(input_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Where the label map for ``input_path`` goes: same file name (and so format) in ``out_dir``."""
    return Path(out_dir) / Path(input_path).name
