"""Registering large slices on a coarser grid (``propagate``'s ``demons_max_pixels``): how much to shrink, and on a real
slice of the bundled sample scan, enlarged as a CT's would be, a field found on the coarser grid and resampled back
still follows a known shift and beats identity, and kept on its coarse grid until a warp needs it is the same field."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.propagation import registration_shrink
from SparseSegLib.engine.slice_registration import CoarseField, demons_field, field_transform
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods.propagate.settings import PropagateSettings

SHIFT = (2.0, -1.5)  # pixels of the enlarged slice, (i, j)


def test_the_shrink_is_the_smallest_power_of_two_that_fits():
    assert registration_shrink((240, 200), 65536) == 1
    assert registration_shrink((256, 256), 65536) == 1
    assert registration_shrink((257, 256), 65536) == 2
    assert registration_shrink((512, 512), 65536) == 2
    assert registration_shrink((1024, 600), 65536) == 4
    assert registration_shrink((4096, 4096), 0) == 1  # 0: never
    with pytest.raises(SparseSegError, match="demons_max_pixels"):
        PropagateSettings.parse({"demons_max_pixels": "-1"})


def test_a_field_from_the_coarser_grid_follows_the_shift_on_the_full_grid(sample_case):
    present = np.flatnonzero((sample_case.label > 0).any(axis=(1, 2)))
    middle = int(present[len(present) // 2])
    fixed = ndimage.zoom(normalize(sample_case.image)[middle], 6, order=1).astype(np.float32)  # about 210 x 306
    mask = ndimage.zoom(sample_case.label[middle] > 0, 6, order=0)
    image = sitk.GetImageFromArray(fixed)
    moving = sitk.GetArrayFromImage(sitk.Resample(image, image, sitk.TranslationTransform(2, (-SHIFT[0], -SHIFT[1])),
                                                  sitk.sitkLinear, float(fixed.min())))
    shrink = registration_shrink(fixed.shape, 128 * 128)
    assert shrink == 2
    coarse = demons_field(fixed, moving, 100, 1.0, finest=shrink)
    assert coarse.shape == fixed.shape + (2,)  # resampled onto the slice's own grid
    error = float(np.linalg.norm(coarse[mask] - np.array(SHIFT), axis=1).mean())
    assert error < 1.0, error  # of a 2.5-pixel shift

    def residual(field: np.ndarray) -> float:
        warped = sitk.GetArrayFromImage(sitk.Resample(sitk.GetImageFromArray(moving), image, field_transform(field),
                                                      sitk.sitkLinear, 0.0))
        return float(((warped - fixed)[24:-24, 24:-24] ** 2).mean())

    assert residual(coarse) < 0.5 * float(((moving - fixed)[24:-24, 24:-24] ** 2).mean())
    # kept on its coarse grid (a propagation's prefetch, four times smaller here) and resampled when warped along:
    # the same field, bit for bit, for a slice of odd size too
    kept = demons_field(fixed, moving, 100, 1.0, finest=shrink, keep_coarse=True)
    assert isinstance(kept, CoarseField) and kept.array.size <= coarse.size // 4
    np.testing.assert_array_equal(kept.on_slice_grid(), coarse)
    odd = demons_field(fixed[:-1, :-3], moving[:-1, :-3], 20, 1.0, finest=shrink, keep_coarse=True)
    np.testing.assert_array_equal(odd.on_slice_grid(), demons_field(fixed[:-1, :-3], moving[:-1, :-3], 20, 1.0,
                                                                    finest=shrink))
    assert isinstance(demons_field(fixed, moving, 5, 1.0, finest=1, keep_coarse=True), np.ndarray)  # no coarse grid
    # a slice too small for the asked grid registers on the coarsest grid that still holds 8 pixels a side
    assert demons_field(fixed[:20, :20], moving[:20, :20], 10, 1.0, finest=8).shape == (20, 20, 2)
