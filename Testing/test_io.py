"""Reading and writing volumes with their exact geometry, and the clear errors for bad input.

Geometry is compared field by field: NRRD stores doubles and round-trips to machine precision; NIfTI
headers hold float32, so there the tolerance is float32 rounding (about 1e-7 relative).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SparseSegLib.case import Case, Geometry
from SparseSegLib.errors import SparseSegError
from SparseSegLib.io import (
    case_id_from_path,
    geometry_of,
    load_case,
    read_annotation,
    read_image,
    read_label,
    read_segmentation,
    to_sitk,
    write_image,
    write_segmentation,
)

#: Absolute tolerance per format for spacing, origin and direction read back.
TOLERANCE = {".nii.gz": 1e-5, ".nrrd": 1e-12}


def rotation(axis: int, degrees: float) -> np.ndarray:
    """A 3x3 rotation about coordinate axis ``axis`` (0 = x, 1 = y, 2 = z)."""
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    a, b = [n for n in range(3) if n != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def with_direction(geometry: Geometry, direction: np.ndarray) -> Geometry:
    return Geometry(geometry.size, geometry.spacing, geometry.origin, tuple(float(d) for d in direction.ravel()))


def assert_same_geometry(actual: Geometry, expected: Geometry, tolerance: float) -> None:
    assert actual.size == expected.size
    np.testing.assert_allclose(actual.spacing, expected.spacing, rtol=0, atol=tolerance)
    np.testing.assert_allclose(actual.origin, expected.origin, rtol=0, atol=tolerance * 100)
    np.testing.assert_allclose(actual.direction, expected.direction, rtol=0, atol=tolerance)
    assert actual.matches(expected)


def ramp(geometry: Geometry) -> np.ndarray:
    """A float32 volume whose every voxel differs, so any axis flip or transpose shows."""
    return np.arange(np.prod(geometry.shape), dtype=np.float32).reshape(geometry.shape) * 0.5 - 7.25


def error_of(call, *args, **kwargs) -> SparseSegError:
    with pytest.raises(SparseSegError) as caught:
        call(*args, **kwargs)
    assert caught.value.hint, "every user-facing error carries a hint"
    return caught.value


# --------------------------------------------------------------------------------------------------
# Geometry


def test_ijk_to_ras_flips_the_first_two_axes_of_ijk_to_lps(rotated_geometry):
    """Slicer's RAS is LPS with x and y negated: ijk_to_ras = diag(-1, -1, 1, 1) @ ijk_to_lps."""
    np.testing.assert_allclose(
        rotated_geometry.ijk_to_ras(), np.diag([-1.0, -1.0, 1.0, 1.0]) @ rotated_geometry.ijk_to_lps()
    )


def test_ijk_to_lps_agrees_with_simpleitk_physical_points(rotated_geometry):
    """The matrix maps voxel (i, j, k) where SimpleITK places it."""
    image = to_sitk(np.zeros(rotated_geometry.shape, np.float32), rotated_geometry)
    for index in [(0, 0, 0), (6, 0, 0), (0, 5, 0), (0, 0, 4), (3, 2, 1)]:
        mapped = rotated_geometry.ijk_to_lps() @ np.array([*index, 1.0])
        np.testing.assert_allclose(mapped[:3], image.TransformIndexToPhysicalPoint(index), atol=1e-9)


def test_from_ijk_to_lps_inverts_ijk_to_lps(rotated_geometry):
    """Splitting the 4x4 matrix recovers spacing, origin and a non-axis-aligned direction."""
    rebuilt = Geometry.from_ijk_to_lps(rotated_geometry.ijk_to_lps(), rotated_geometry.size)
    assert_same_geometry(rebuilt, rotated_geometry, 1e-12)


def test_shape_is_the_size_reversed(rotated_geometry):
    """Arrays are (k, j, i); Geometry.size is (i, j, k)."""
    assert rotated_geometry.shape == (5, 6, 7)
    assert rotated_geometry.spacing_kji == (2.5, 1.3, 0.7)


# --------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize(
    "direction",
    [
        pytest.param(rotation(2, 30.0), id="rotated-30-about-z"),
        pytest.param(rotation(0, 30.0) @ np.diag([-1.0, -1.0, 1.0]), id="rotated-30-about-x-LPS-flipped"),
        pytest.param(rotation(1, -17.0) @ rotation(2, 41.0), id="oblique"),
    ],
)
def test_image_round_trip_keeps_voxels_and_geometry(tmp_path, rotated_geometry, extension, direction):
    """Written and read back, an image keeps its voxels, size, anisotropic spacing, origin and direction."""
    geometry = with_direction(rotated_geometry, direction)
    array = ramp(geometry)
    path = write_image(array, geometry, tmp_path / f"volume{extension}")
    read_array, read_geometry = read_image(path)
    assert read_array.dtype == np.float32
    np.testing.assert_array_equal(read_array, array)
    assert_same_geometry(read_geometry, geometry, TOLERANCE[extension])


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd"])
def test_label_round_trip_keeps_values_on_the_image_grid(tmp_path, rotated_geometry, extension):
    """A label map written next to its image reads back as uint8 on the image's grid."""
    label = (ramp(rotated_geometry) > 0).astype(np.uint8) + (ramp(rotated_geometry) > 40).astype(np.uint8)
    path = write_image(label, rotated_geometry, tmp_path / f"label{extension}")
    read = read_label(path, rotated_geometry)
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, label)


def test_boolean_masks_are_written_as_zero_and_one(tmp_path, rotated_geometry):
    mask = ramp(rotated_geometry) > 0
    read = read_label(write_image(mask, rotated_geometry, tmp_path / "mask.nrrd"))
    np.testing.assert_array_equal(read, mask.astype(np.uint8))


def test_segmentation_round_trip_keeps_values_names_colors_and_geometry(tmp_path, rotated_geometry):
    """A .seg.nrrd keeps label values, class names, colors and a rotated, flipped geometry."""
    geometry = with_direction(rotated_geometry, rotation(0, 30.0) @ np.diag([-1.0, -1.0, 1.0]))
    label = np.zeros(geometry.shape, np.uint8)
    label[1:3, 2:4, 1:5] = 1
    label[3, :, 2:] = 2
    label[4, 0, 0] = 3
    names = {1: "Anterior", 2: "Posterior", 3: "Tail"}
    colors = {1: (1.0, 0.0, 0.0), 2: (0.0, 0.5, 1.0), 3: (0.25, 0.75, 0.125)}
    path = write_segmentation(label, geometry, tmp_path / "result.seg.nrrd", names, colors)
    read_label_map, read_geometry, read_names, read_colors = read_segmentation(path)
    np.testing.assert_array_equal(read_label_map, label)
    assert read_names == names
    assert set(read_colors) == set(colors)
    for value, color in colors.items():
        np.testing.assert_allclose(read_colors[value], color, atol=1e-6)
    assert_same_geometry(read_geometry, geometry, 1e-9)


def test_segmentation_is_read_as_an_annotation_of_its_image(tmp_path, rotated_geometry):
    """read_annotation accepts a .seg.nrrd on the image's grid and returns its class names."""
    label = (ramp(rotated_geometry) > 10).astype(np.uint8)
    path = write_segmentation(label, rotated_geometry, tmp_path / "a.seg.nrrd", {1: "Tumor"})
    read, names, _ = read_annotation(path, rotated_geometry)
    np.testing.assert_array_equal(read, label)
    assert names == {1: "Tumor"}


def test_load_case_reads_image_label_and_names(tmp_path, rotated_geometry):
    image_path = write_image(ramp(rotated_geometry), rotated_geometry, tmp_path / "scan_7.nrrd")
    label = (ramp(rotated_geometry) > 0).astype(np.uint8)
    label_path = write_image(label, rotated_geometry, tmp_path / "labels" / "scan_7.nrrd")
    case = load_case(image_path, label_path, class_names={1: "Organ"})
    assert isinstance(case, Case)
    assert case.case_id == "scan_7"
    assert case.class_names == {1: "Organ"}
    np.testing.assert_array_equal(case.label, label)
    assert case.annotated is None


@pytest.mark.parametrize(
    ("name", "case_id"),
    [("hippocampus_001.nii.gz", "hippocampus_001"), ("a.b.nrrd", "a.b"), ("x.seg.nrrd", "x"), ("y.mha", "y")],
)
def test_case_ids_are_file_names_without_image_extensions(name, case_id):
    assert case_id_from_path(Path("/data") / name) == case_id


# --------------------------------------------------------------------------------------------------
# The bundled sample data


def test_bundled_case_reads_with_its_expected_shape(sample_case):
    """hippocampus_001 is 35 x 51 x 35 voxels ((k, j, i)), 1 mm isotropic, LPS-flipped, classes 0..2."""
    assert sample_case.case_id == "hippocampus_001"
    assert sample_case.image.shape == (35, 51, 35)
    assert sample_case.image.dtype == np.float32
    assert sample_case.geometry.size == (35, 51, 35)
    np.testing.assert_allclose(sample_case.geometry.spacing, (1.0, 1.0, 1.0))
    assert sample_case.class_names == {1: "Anterior", 2: "Posterior"}
    assert sample_case.label.dtype == np.uint8
    assert set(np.unique(sample_case.label)) == {0, 1, 2}
    assert sample_case.num_classes == 3


def test_bundled_labels_are_on_their_images_grids(sample_dataset):
    """Every sample label map has its image's geometry (read_label checks it)."""
    for ref in sample_dataset.cases:
        array, geometry = read_image(ref.image)
        label = read_label(ref.label, geometry)
        assert label.shape == array.shape == geometry.shape


def test_float_label_maps_with_integer_values_are_accepted(sample_dataset):
    """hippocampus_003's label map is stored as float32 0.0/1.0/2.0; it reads as uint8 classes."""
    ref = next(ref for ref in sample_dataset.cases if ref.case_id == "hippocampus_003")
    assert sitk.ReadImage(str(ref.label)).GetPixelID() == sitk.sitkFloat32
    label = read_label(ref.label)
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2}


def test_sample_dataset_lists_twelve_cases_with_class_names(sample_dataset, sample_dir):
    assert len(sample_dataset.cases) == 12
    assert sample_dataset.class_names == {1: "Anterior", 2: "Posterior"}
    assert all(ref.image.parent == sample_dir / "imagesTr" for ref in sample_dataset.cases)


# --------------------------------------------------------------------------------------------------
# Bad input: each a SparseSegError naming the cause


def test_missing_file_is_reported_as_not_found(tmp_path):
    error = error_of(read_image, tmp_path / "nowhere.nii.gz")
    assert "not found" in error.message and "nowhere.nii.gz" in error.message


def test_a_folder_is_not_an_image(tmp_path):
    assert "folder" in error_of(read_image, tmp_path).message


def test_unreadable_file_is_reported_as_not_an_image(tmp_path):
    """A text file with an image extension is not silently accepted."""
    fake = tmp_path / "x.nii.gz"
    fake.write_text("this is not a NIfTI file\n")
    error = error_of(read_image, fake)
    assert "cannot read" in error.message and "x.nii.gz" in error.message
    assert "NIfTI" in error.hint


def test_2d_image_is_rejected(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(16, 12, sitk.sitkFloat32), str(path))
    assert "2D" in error_of(read_image, path).message
    assert "2D" in error_of(read_label, path).message


def test_single_slice_3d_image_is_rejected_as_2d(tmp_path):
    path = tmp_path / "one_slice.nrrd"
    sitk.WriteImage(sitk.Image(16, 12, 1, sitk.sitkFloat32), str(path))
    assert "2D" in error_of(read_image, path).message


def test_4d_image_is_rejected_without_a_channel(tmp_path):
    """A time series or multi-modal stack (sitk.JoinSeries of 3D volumes) is not one 3D volume: say how to pick one
    (test_multichannel.py reads the channel when one is given)."""
    volume = sitk.Image(6, 5, 4, sitk.sitkFloat32)
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([volume, volume, volume]), str(path))
    error = error_of(read_image, path)
    assert "3 channels" in error.message
    assert "--channel" in error.hint and "Vector to Scalar" in error.hint


@pytest.mark.parametrize("extension", [".nrrd", ".nii.gz"])
def test_vector_image_is_rejected(tmp_path, extension):
    """A multi-component (e.g. RGB) volume is not a scalar volume unless a channel is chosen."""
    volume = sitk.Image(6, 5, 4, sitk.sitkFloat32)
    path = tmp_path / f"rgb{extension}"
    sitk.WriteImage(sitk.Compose([volume, volume, volume]), str(path))
    error = error_of(read_image, path)
    assert "3 channels" in error.message and "--channel" in error.hint


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_intensities_are_rejected(tmp_path, rotated_geometry, bad):
    array = ramp(rotated_geometry)
    array[2, 3, 4] = bad
    array[0, 0, 0] = bad
    path = write_image(array, rotated_geometry, tmp_path / "holes.nrrd")
    error = error_of(read_image, path)
    assert "2 NaN or infinite voxels" in error.message


def test_non_integer_label_map_is_rejected(tmp_path, rotated_geometry):
    label = np.zeros(rotated_geometry.shape, np.float32)
    label[1, 1, 1] = 0.5
    path = write_image(label, rotated_geometry, tmp_path / "probabilities.nii.gz")
    assert "non-integer" in error_of(read_label, path).message


def test_negative_label_values_are_rejected(tmp_path, rotated_geometry):
    label = np.zeros(rotated_geometry.shape, np.int16)
    label[1, 1, 1] = -1
    path = write_image(label, rotated_geometry, tmp_path / "negative.nrrd")
    assert "negative" in error_of(read_label, path).message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda g: Geometry(g.size, (0.7, 1.3, 3.0), g.origin, g.direction), "spacing"),
        (lambda g: Geometry((7, 6, 4), g.spacing, g.origin, g.direction), "size"),
        (lambda g: Geometry(g.size, g.spacing, (0.0, 0.0, 0.0), g.direction), "origin"),
        (lambda g: with_direction(g, rotation(2, 35.0)), "direction"),
    ],
    ids=["spacing", "size", "origin", "direction"],
)
def test_label_map_on_another_grid_is_rejected(tmp_path, rotated_geometry, change, named):
    """A label map must lie on its image's voxel grid; the message says which part differs."""
    image_path = write_image(ramp(rotated_geometry), rotated_geometry, tmp_path / "image.nrrd")
    other = change(rotated_geometry)
    label_path = write_image(np.zeros(other.shape, np.uint8), other, tmp_path / "label.nrrd")
    error = error_of(load_case, image_path, label_path)
    assert "not on the image's voxel grid" in error.message and named in error.message
    assert "Resample" in error.hint


def test_segmentation_on_another_grid_is_rejected(tmp_path, rotated_geometry):
    other = Geometry(rotated_geometry.size, (1.0, 1.0, 1.0), rotated_geometry.origin, rotated_geometry.direction)
    path = write_segmentation(np.zeros(other.shape, np.uint8), other, tmp_path / "s.seg.nrrd", {1: "A"})
    error = error_of(read_annotation, path, rotated_geometry)
    assert "not on the image's voxel grid" in error.message and "spacing" in error.message


def test_geometry_of_reads_what_to_sitk_wrote(rotated_geometry):
    assert geometry_of(to_sitk(np.zeros(rotated_geometry.shape, np.uint8), rotated_geometry)) == rotated_geometry


def test_a_failed_write_keeps_the_old_file_whole(tmp_path, rotated_geometry, monkeypatch):
    """write_image and write_segmentation go through jobs.atomic: Slicer, polling a round's label, sees the old
    file or the new one; a writer that dies half-way leaves the old file and no temporary behind."""
    label = np.zeros(rotated_geometry.shape, np.uint8)
    label[1:3, 2:5, 1:4] = 1
    image_path = write_image(label, rotated_geometry, tmp_path / "label.nrrd")
    segmentation_path = write_segmentation(label, rotated_geometry, tmp_path / "label.seg.nrrd", {1: "organ"})
    before = {path: path.read_bytes() for path in (image_path, segmentation_path)}

    def die_half_way(filename) -> None:
        Path(filename).write_bytes(b"NRRD0004\nhalf")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", lambda image, filename, *args: die_half_way(filename))
    with pytest.raises(SparseSegError, match="cannot write"):
        write_image(1 - label, rotated_geometry, image_path)
    import slicerio

    monkeypatch.setattr(slicerio, "write_segmentation", lambda filename, segmentation: die_half_way(filename))
    with pytest.raises(RuntimeError, match="No space"):
        write_segmentation(1 - label, rotated_geometry, segmentation_path, {1: "organ"})
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label.nrrd", "label.seg.nrrd"]
