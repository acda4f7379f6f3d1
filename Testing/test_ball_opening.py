"""``propagate``'s end opening by distance transforms (:func:`SparseSegLib.methods.propagate.fusion.ball_opening`)
is scipy's ``binary_opening`` with a ball, voxel for voxel, on isotropic and anisotropic grids, at the array's edge."""

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
