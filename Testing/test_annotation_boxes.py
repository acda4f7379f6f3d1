"""Simulated ROI boxes (``boxes:N:SIZE``): where the cubes go, their size, overlap and seeds, and the errors when
they cannot fit. Asserted on the real bundled hippocampus labels (hippocampus_001: 35 x 51 x 35 voxels, k, j, i)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from SparseSegLib.annotation import place_boxes, simulate_annotation
from SparseSegLib.errors import SparseSegError


def box_slices(corner: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[slice, ...]:
    return tuple(slice(c, c + s) for c, s in zip(corner, shape))



def test_boxes_are_inside_the_volume_non_overlapping_and_of_exact_size(sample_label):
    """Each of the N cubes lies wholly inside the volume, has SIZE voxels per side, and none overlap."""
    count, size = 6, 8
    corners = place_boxes(sample_label.shape, f"boxes:{count}:{size}", seed=3)
    assert len(corners) == count
    for corner in corners:
        assert all(0 <= c and c + size <= s for c, s in zip(corner, sample_label.shape))
    for a, b in itertools.combinations(corners, 2):
        assert any(abs(x - y) >= size for x, y in zip(a, b)), f"boxes at {a} and {b} overlap"

    annotated = simulate_annotation(sample_label, f"boxes:{count}:{size}", seed=3)
    expected = np.zeros(sample_label.shape, bool)
    for corner in corners:
        expected[box_slices(corner, (size,) * 3)] = True
    np.testing.assert_array_equal(annotated, expected)
    assert annotated.sum() == count * size**3  # no voxel counted twice: no overlap


def test_box_sizes_may_differ_per_axis_in_array_order(sample_label):
    """boxes:N:AxBxC gives boxes A slices deep (k), B rows (j) and C columns (i)."""
    (corner,) = place_boxes(sample_label.shape, "boxes:1:3x5x7", seed=0)
    annotated = simulate_annotation(sample_label, "boxes:1:3x5x7", seed=0)
    expected = np.zeros(sample_label.shape, bool)
    expected[box_slices(corner, (3, 5, 7))] = True
    np.testing.assert_array_equal(annotated, expected)


def test_boxes_annotate_background_voxels_too(sample_label):
    """Every voxel of a box is annotated, whatever its label."""
    annotated = simulate_annotation(sample_label, "boxes:4:10", seed=1)
    assert (sample_label[annotated] == 0).any()
    for corner in place_boxes(sample_label.shape, "boxes:4:10", seed=1):
        assert annotated[box_slices(corner, (10, 10, 10))].all()


def test_boxes_are_reproducible_with_the_same_seed_and_differ_with_another(sample_label):
    """The seed alone decides where the boxes go."""
    first = simulate_annotation(sample_label, "boxes:5:8", seed=42)
    again = simulate_annotation(sample_label, "boxes:5:8", seed=42)
    other = simulate_annotation(sample_label, "boxes:5:8", seed=43)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_box_larger_than_the_volume_is_an_error(sample_label):
    """The message names the box and volume sizes."""
    with pytest.raises(SparseSegError, match="larger than the volume") as caught:
        simulate_annotation(sample_label, "boxes:1:40")
    assert "35x51x35" in caught.value.message


@pytest.mark.parametrize("spec", ["boxes:10:20", "boxes:3:20"])
def test_boxes_that_cannot_all_fit_without_overlap_are_an_error(sample_label, spec):
    """Too much volume (10 x 20^3) or too little room (3 cubes of 20 in 35x51x35) both fail clearly."""
    with pytest.raises(SparseSegError, match="do not fit") as caught:
        simulate_annotation(sample_label, spec)
    assert "fewer or smaller" in caught.value.hint


def test_boxes_that_just_fit_are_placed(sample_label):
    """Two 20-voxel cubes fit only side by side along j (51 rows); rejection sampling finds them."""
    corners = place_boxes(sample_label.shape, "boxes:2:20", seed=5)
    (a, b) = corners
    assert abs(a[1] - b[1]) >= 20
