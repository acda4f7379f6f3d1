"""Coarse-to-fine demons (``propagate``'s ``demons_levels``) on a real slice of the bundled sample scan: a
displacement of several pixels, as between thick slices, is found where one level falls short; processes give the
same field as one; a grid too small for a coarser level registers on the levels it can hold; the Start default
takes the levels from the voxel spacing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.propagation import demons_levels_for
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods.base import MethodOptions, SilentReporter, get_method
from SparseSegLib.methods.propagate.settings import PropagateSettings
from SparseSegLib.engine.slice_registration import demons_field, demons_fields, field_transform

SHIFT = (5.0, -4.0)  # pixels, (i, j)


def shifted(slice_: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    image = sitk.GetImageFromArray(slice_.astype(np.float32))
    moved = sitk.Resample(image, image, sitk.TranslationTransform(2, shift), sitk.sitkLinear, float(slice_.min()))
    return sitk.GetArrayFromImage(moved)


def central_slice(sample_case) -> np.ndarray:
    image = normalize(sample_case.image)
    present = np.flatnonzero((sample_case.label > 0).any(axis=(1, 2)))
    return image[int(present[len(present) // 2])]


def object_error(field: np.ndarray, mask: np.ndarray) -> float:
    """Mean distance (pixels) between the field and the true shift over the object's pixels."""
    return float(np.linalg.norm(field[mask] - np.array(SHIFT), axis=1).mean())


def test_two_levels_find_a_shift_that_one_level_misses(sample_case):
    fixed = central_slice(sample_case)
    moving = shifted(fixed, (-SHIFT[0], -SHIFT[1]))  # fixed(x) = moving(x + SHIFT)
    present = np.flatnonzero((sample_case.label > 0).any(axis=(1, 2)))
    mask = sample_case.label[int(present[len(present) // 2])] > 0
    one = demons_field(fixed, moving, 50, 1.0, levels=1)
    two = demons_field(fixed, moving, 50, 1.0, levels=2)
    assert one.shape == two.shape == fixed.shape + (2,)
    assert object_error(two, mask) < 0.75 * object_error(one, mask)

    def residual(field: np.ndarray) -> float:
        image = sitk.GetImageFromArray(moving)
        warped = sitk.GetArrayFromImage(sitk.Resample(image, image, field_transform(field), sitk.sitkLinear, 0.0))
        return float(((warped - fixed)[8:-8, 8:-8] ** 2).mean())

    assert residual(two) < residual(one) < float(((moving - fixed)[8:-8, 8:-8] ** 2).mean())


def test_levels_in_processes_equal_one_process_and_tiny_grids_skip_coarse_levels(sample_case):
    fixed = central_slice(sample_case)
    moving = shifted(fixed, (2.0, 1.0))
    alone = demons_field(fixed, moving, 20, 1.0, levels=2)
    pooled = demons_fields([(fixed, moving)] * 4, 20, 1.0, workers=2, levels=2)
    for field in pooled:
        np.testing.assert_array_equal(field, alone)
    tiny_fixed, tiny_moving = fixed[:12, :12], moving[:12, :12]  # halving would leave under 8 pixels
    np.testing.assert_array_equal(demons_field(tiny_fixed, tiny_moving, 20, 1.0, levels=3),
                                  demons_field(tiny_fixed, tiny_moving, 20, 1.0, levels=1))


def test_levels_follow_the_ratio_of_slice_to_pixel_spacing_and_bad_values_are_refused():
    spacings = ((1, 1, 1), (1.9, 1, 1), (1.25, 0.625, 0.625), (2.5, 0.625, 0.625), (5.0, 0.625, 0.625),
                (3.6, 0.6, 0.6), (1.0, 1.0, 0.5))
    assert [demons_levels_for(s) for s in spacings] == [1, 1, 2, 3, 3, 3, 2]
    assert PropagateSettings().demons_levels == 0  # the default: from the spacing
    with pytest.raises(SparseSegError, match="demons_levels"):
        PropagateSettings.parse({"demons_levels": "9"})


class LogReporter(SilentReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def registration_round(case, extra: dict) -> tuple[np.ndarray, list[str]]:
    options = MethodOptions(device="cpu", extra={"iterations": 4, "batch_size": 2, **extra}, rounds=None)
    reporter = LogReporter()
    first = next(iter(get_method("propagate").run_rounds([case], options, reporter)))
    return first.probabilities[case.case_id], reporter.lines


def test_a_start_job_registers_thick_slices_coarse_to_fine_and_isotropic_ones_as_before(sample_case):
    """The sample scan's own 1 mm voxels: one level, the same result as asking for one. The same arrays declared
    as 4 mm slices: three levels, said in the round's log line, and another result."""
    present = np.flatnonzero((sample_case.label > 0).any(axis=(1, 2)))
    annotated = np.zeros(sample_case.label.shape, bool)
    annotated[int(present[len(present) // 2])] = True
    case = sample_case.with_annotation(annotated)
    default, lines = registration_round(case, {})
    one, _ = registration_round(case, {"demons_levels": 1})
    np.testing.assert_array_equal(default, one)
    assert not any("resolutions" in line for line in lines)
    spacing = case.geometry.spacing
    thick = replace(case, geometry=replace(case.geometry, spacing=(spacing[0], spacing[1], 4.0 * spacing[2])))
    coarse, lines = registration_round(thick, {})
    assert any("demons at 3 resolutions" in line for line in lines)
    assert not np.array_equal(coarse, default)


def test_on_thick_slices_the_object_comes_coarse_to_fine_and_the_split_between_parts_from_one_level(sample_case):
    """The sample's two hippocampus parts, declared as 4 mm slices, with ``classes=registration``: the registration
    round's object is the coarse-to-fine chain's, and each object voxel's class is the one-level chain's."""
    from SparseSegLib.methods.propagate.fusion import classes_from_registration

    present = np.flatnonzero((sample_case.label > 0).any(axis=(1, 2)))
    annotated = np.zeros(sample_case.label.shape, bool)
    annotated[int(present[int(0.4 * len(present))])] = True  # a slice that shows both parts (the central one: one)
    spacing = sample_case.geometry.spacing
    geometry = replace(sample_case.geometry, spacing=(spacing[0], spacing[1], 4 * spacing[2]))
    case = replace(sample_case, geometry=geometry).with_annotation(annotated)

    def first_round(extra: dict):
        options = MethodOptions(device="cpu", extra={"iterations": 4, "batch_size": 2, **extra}, rounds=None)
        result = next(iter(get_method("propagate").run_rounds([case], options, SilentReporter())))
        return result.labels[case.case_id], result.probabilities[case.case_id]

    coarse_labels, coarse = first_round({"classes": "fused"})
    _, one_level = first_round({"classes": "fused", "demons_levels": 1})
    split_labels, probabilities = first_round({"classes": "registration"})
    np.testing.assert_array_equal(probabilities, coarse)  # the streamed probabilities stay the coarse chain's
    np.testing.assert_array_equal(split_labels > 0, coarse_labels > 0)
    expected = classes_from_registration(coarse_labels, one_level)
    expected[annotated] = case.label[annotated]
    assert (split_labels != expected).sum() <= 3  # but a hole the anchoring fills after the split
    assert (split_labels != coarse_labels).sum() >= 20  # the split did move


def test_a_coarse_field_reaches_the_last_column_of_an_odd_grid(sample_case):
    """A halved odd-sized grid ends half a coarse pixel short of the fine one; the coarse field carries over to
    that rim by nearest-neighbour extrapolation instead of starting it from zero displacement."""
    fixed = central_slice(sample_case)
    fixed = fixed[:, : fixed.shape[1] - 1 + fixed.shape[1] % 2]  # an odd number of columns
    moving = shifted(fixed, (-SHIFT[0], -SHIFT[1]))
    field = demons_field(fixed, moving, 50, 1.0, levels=2)
    rim = np.linalg.norm(field[8:-8, -1], axis=1).mean()
    inside = np.linalg.norm(field[8:-8, -9], axis=1).mean()
    assert rim > 0.9 * inside
