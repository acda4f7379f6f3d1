"""Coarse-to-fine demons (``propagate``'s ``demons_levels``) on a real slice of the bundled sample scan: a
displacement of several pixels, as between thick slices, is found where one level falls short; processes give the
same field as one; a grid too small for a coarser level registers on the levels it can hold."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SparseSegLib.engine.preprocessing import normalize
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
