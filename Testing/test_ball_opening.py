"""``propagate``'s end opening by distance transforms (:func:`SparseSegLib.methods.propagate.fusion.ball_opening`)
is scipy's ``binary_opening`` with a ball, voxel for voxel, on isotropic and anisotropic grids, at the array's edge,
whole or in slabs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from SparseSegLib.methods.propagate.fusion import ball_opening


def opening_with_a_ball(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    reach = [int(np.floor(radius_mm / s)) for s in spacing]
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
    ball = sum((g * s / radius_mm) ** 2 for g, s in zip(grid, spacing)) <= 1.0
    return ndimage.binary_opening(mask, structure=ball)


@pytest.mark.parametrize("spacing, radius", [((1.0, 1.0, 1.0), 1.5), ((2.5, 0.7, 0.7), 2.0), ((0.5, 1.0, 1.3), 3.1)])
def test_the_distance_transform_opening_is_the_ball_opening(spacing, radius):
    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.random((30, 40, 35)), 3) > 0.5
    mask[:, :3] |= rng.random(mask[:, :3].shape) > 0.3  # thin bits touching the array's edge
    expected = opening_with_a_ball(mask, radius, spacing)
    assert expected.any() and (expected != mask).any()  # the opening does something here
    np.testing.assert_array_equal(ball_opening(mask, radius, spacing), expected)
    assert not ball_opening(np.zeros_like(mask), radius, spacing).any()
    # in slabs along axis 0 (a few slices each, the memory bound on a large scan): the same voxels
    np.testing.assert_array_equal(ball_opening(mask, radius, spacing, slab_voxels=4 * 40 * 35), expected)


def test_slabs_far_from_any_eroded_voxel_lose_their_thin_parts():
    """A fat block on one end of a long thin rod: the slabs along the rod hold no voxel that survives the erosion,
    so there the dilation's slab has no background at all (the all-object branch), and the rod must go."""
    mask = np.zeros((80, 12, 20), bool)
    mask[2:30, 1:11, 1:11] = True
    mask[30:78, 5:7, 5:7] = True  # the rod
    mask[15, 5:7, 11:19] = True  # a thin spur on the block
    expected = opening_with_a_ball(mask, 2.0, (1.0, 1.0, 1.0))
    assert expected[8:24, 3:9, 3:9].all() and not expected[40:].any() and not expected[15, 5:7, 14:].any()
    np.testing.assert_array_equal(ball_opening(mask, 2.0, (1.0, 1.0, 1.0), slab_voxels=3 * 14 * 22), expected)
