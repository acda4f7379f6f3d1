"""Simulated sparse annotation: which voxels a user following a spec would have annotated.

Results are asserted on the real bundled hippocampus labels (hippocampus_001: 35 x 51 x 35 voxels
in (k, j, i) order, two classes); synthetic arrays are used only to provoke errors. ROI boxes: test_annotation_boxes.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from SparseSegLib.annotation import (
    AnnotationSpec,
    annotate_case,
    annotated_slices,
    case_seed,
    check_annotation,
    extent_slices,
    object_extent,
    parse_annotation_spec,
    simulate_annotation,
)
from SparseSegLib.errors import SparseSegError


def extent_along(label: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last slice along ``axis`` with foreground, computed independently of the module."""
    moved = np.moveaxis(label > 0, axis, 0)
    occupied = [s for s in range(moved.shape[0]) if moved[s].any()]
    return occupied[0], occupied[-1]


# --------------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("central-slice", AnnotationSpec("central-slice", axis=0, count=1)),
        ("central-slice:2", AnnotationSpec("central-slice", axis=2, count=1)),
        ("central-slice:k", AnnotationSpec("central-slice", axis=0, count=1)),
        ("central-slice:j", AnnotationSpec("central-slice", axis=1, count=1)),
        ("Central-Slice:I", AnnotationSpec("central-slice", axis=2, count=1)),
        ("slices:3", AnnotationSpec("slices", axis=0, count=3)),
        ("slices:5:1", AnnotationSpec("slices", axis=1, count=5)),
        ("slices:2:i", AnnotationSpec("slices", axis=2, count=2)),
        ("boxes:5:16", AnnotationSpec("boxes", count=5, size=16)),
        ("boxes:2:4x6x8", AnnotationSpec("boxes", count=2, size=(4, 6, 8))),
        ("full", AnnotationSpec("full", axis=0, count=0)),
        ("  full  ", AnnotationSpec("full", axis=0, count=0)),
        ("painted", AnnotationSpec("painted", axis=-1, count=0)),
        ("painted:j", AnnotationSpec("painted", axis=1, count=0)),
    ],
)
def test_valid_specs_parse_to_their_meaning(text, expected):
    """Every documented form parses; axes may be numbers in array order or the names k, j, i."""
    assert parse_annotation_spec(text) == expected


@pytest.mark.parametrize("text", ["central-slice", "central-slice:2", "slices:3:1", "boxes:5:16", "boxes:2:4x6x8", "full",
                                  "painted", "painted:2"])
def test_spec_string_form_parses_back_to_the_same_spec(text):
    """``str(spec)`` is a canonical spec string (used in logs and result tables)."""
    spec = parse_annotation_spec(text)
    assert parse_annotation_spec(str(spec)) == spec


def test_default_axis_is_the_slice_stack():
    """Axis 0 in (k, j, i) array order: SimpleITK numpy axis 0, the image's third voxel index."""
    assert parse_annotation_spec("central-slice").axis == 0
    assert parse_annotation_spec("slices:4").axis == 0


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("", "empty"),
        ("slice", "unknown annotation kind"),
        ("scribbles:3", "unknown annotation kind"),
        ("slices", "field"),
        ("slices:0", "must be positive"),
        ("slices:-2", "must be positive"),
        ("slices:two", "not a whole number"),
        ("slices:2.5", "not a whole number"),
        ("slices:3:1:1", "field"),
        ("boxes:3", "field"),
        ("boxes:0:8", "must be positive"),
        ("boxes:3:0", "must be positive"),
        ("boxes:3:4x4", "AxBxC"),
        ("boxes:3:4x0x4", "must be positive"),
        ("central-slice:3", "axis '3'"),
        ("central-slice:x", "axis 'x'"),
        ("full:1", "field"),
    ],
)
def test_invalid_specs_are_rejected_with_the_valid_forms_as_hint(text, cause):
    """A bad spec names the problem; the hint lists every valid form."""
    with pytest.raises(SparseSegError) as caught:
        parse_annotation_spec(text)
    assert cause in caught.value.message
    for form in ("central-slice", "slices:N", "boxes:N:SIZE", "full"):
        assert form in caught.value.hint


def test_specs_built_directly_are_validated_too():
    """An AnnotationSpec cannot be built with an unknown kind or a non-positive count."""
    with pytest.raises(SparseSegError, match="unknown annotation kind"):
        AnnotationSpec("lines")
    with pytest.raises(SparseSegError, match="must be positive"):
        AnnotationSpec("boxes", count=0, size=8)


# --------------------------------------------------------------------------------------------------
# central-slice


def test_central_slice_is_the_middle_of_the_volume_along_axis_0(sample_label):
    """central-slice annotates slice floor(depth / 2) of the volume, the whole slice and nothing else."""
    annotated = simulate_annotation(sample_label, "central-slice")
    middle = sample_label.shape[0] // 2
    assert annotated.dtype == bool and annotated.shape == sample_label.shape
    assert annotated_slices(annotated, 0) == [middle]
    assert annotated[middle].all()
    assert annotated.sum() == sample_label.shape[1] * sample_label.shape[2]


def test_central_slice_uses_floor_for_an_even_depth(sample_label):
    """With an even number of slices the upper of the two middle slices is taken (floor(depth / 2))."""
    even = sample_label[:34]
    assert annotated_slices(simulate_annotation(even, "central-slice"), 0) == [17]


@pytest.mark.parametrize("spec", ["central-slice:2", "central-slice:i"])
def test_central_slice_along_axis_2(sample_label, spec):
    """Along axis 2 (i) the annotated plane is array[:, :, depth_i // 2]."""
    annotated = simulate_annotation(sample_label, spec)
    middle = sample_label.shape[2] // 2
    assert annotated_slices(annotated, 2) == [middle]
    assert annotated[:, :, middle].all()
    assert annotated.sum() == sample_label.shape[0] * sample_label.shape[1]


def test_central_slice_ignores_where_the_object_is(sample_label):
    """The volume's middle is annotated even when the object lies elsewhere (paper protocol)."""
    shifted = np.zeros_like(sample_label)
    shifted[:5] = sample_label[10:15]  # all foreground within the first five slices
    annotated = simulate_annotation(shifted, "central-slice")
    assert annotated_slices(annotated, 0) == [shifted.shape[0] // 2]
    summary = check_annotation(shifted, annotated)  # no foreground in the annotation is allowed
    assert summary.foreground_per_class == {}


def test_annotated_slice_includes_its_background(sample_label):
    """Every voxel of an annotated slice is annotated: the unpainted part is known background."""
    annotated = simulate_annotation(sample_label, "central-slice")
    middle = sample_label.shape[0] // 2
    assert (sample_label[middle] == 0).any() and (sample_label[middle] > 0).any()
    assert annotated[middle][sample_label[middle] == 0].all()


# --------------------------------------------------------------------------------------------------
# slices:N


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_one_slice_is_the_central_slice_of_the_object_extent(sample_label, axis):
    """slices:1 annotates first + L // 2 of the object's extent first..last (L = last - first + 1)."""
    first, last = extent_along(sample_label, axis)
    annotated = simulate_annotation(sample_label, f"slices:1:{axis}")
    assert annotated_slices(annotated, axis) == [first + (last - first + 1) // 2]
    assert object_extent(sample_label, axis) == (first, last)


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_n_slices_are_evenly_spaced_within_the_object_extent(sample_label, count):
    """N slices sit at the centres of N equal bins of the extent: inside it, distinct, evenly spaced."""
    first, last = extent_along(sample_label, 0)
    length = last - first + 1
    annotated = simulate_annotation(sample_label, f"slices:{count}")
    positions = annotated_slices(annotated, 0)
    assert len(positions) == count
    assert first <= positions[0] and positions[-1] <= last
    gaps = np.diff(positions)
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1  # even spacing up to rounding
    assert abs(gaps.mean() - length / count) <= 1
    # Equal margins at both ends: half a bin, up to rounding.
    assert abs((positions[0] - first) - (last - positions[-1])) <= 1
    for position in positions:
        assert annotated[position].all()  # whole slices, background included
    assert annotated.sum() == count * sample_label.shape[1] * sample_label.shape[2]


def test_every_slice_of_the_extent_can_be_asked_for(sample_label):
    """slices:L, with L the extent's length, annotates exactly the slices first..last."""
    first, last = extent_along(sample_label, 0)
    positions = extent_slices(sample_label, last - first + 1, 0)
    assert positions == list(range(first, last + 1))


def test_slices_are_placed_along_the_requested_axis(sample_label):
    """slices:N:j places the slices in the extent along axis 1."""
    first, last = extent_along(sample_label, 1)
    positions = annotated_slices(simulate_annotation(sample_label, "slices:3:j"), 1)
    assert len(positions) == 3 and first <= positions[0] < positions[-1] <= last


def test_slices_need_foreground_to_find_the_object_extent(sample_label):
    """A label map without foreground has no extent: a clear error suggesting another spec."""
    with pytest.raises(SparseSegError, match="no foreground") as caught:
        simulate_annotation(np.zeros_like(sample_label), "slices:3")
    assert "central-slice" in caught.value.hint


def test_more_slices_than_the_object_spans_is_an_error(sample_label):
    """The slices must be distinct slices of the extent."""
    first, last = extent_along(sample_label, 0)
    length = last - first + 1
    with pytest.raises(SparseSegError, match=f"spans only {length} slice"):
        simulate_annotation(sample_label, f"slices:{length + 1}")


def test_more_slices_than_the_volume_has_is_an_error(sample_label):
    """Asking for more slices than the volume holds along the axis names the volume's depth."""
    depth = sample_label.shape[0]
    with pytest.raises(SparseSegError, match=f"only {depth} along axis 0") as caught:
        simulate_annotation(sample_label, f"slices:{depth + 1}")
    assert str(depth) in caught.value.hint


# --------------------------------------------------------------------------------------------------
# full, axis errors, other inputs


def test_full_annotates_every_voxel(sample_label):
    assert simulate_annotation(sample_label, "full").all()


@pytest.mark.parametrize("spec", [AnnotationSpec("central-slice", axis=3), AnnotationSpec("slices", axis=-1, count=2)])
def test_an_axis_the_volume_lacks_is_an_error(sample_label, spec):
    """Axes are 0, 1, 2 of a 3D volume; anything else is outside it."""
    with pytest.raises(SparseSegError, match="outside the volume"):
        simulate_annotation(sample_label, spec)


def test_a_label_map_that_is_not_3d_is_an_error(sample_label):
    with pytest.raises(SparseSegError, match="2D label map"):
        simulate_annotation(sample_label[0], "central-slice")


# --------------------------------------------------------------------------------------------------
# check_annotation and annotated_slices


def test_check_annotation_rejects_an_empty_mask(sample_label):
    """No annotated voxel at all is an 'empty annotation', with a hint to paint something."""
    with pytest.raises(SparseSegError, match="empty annotation") as caught:
        check_annotation(sample_label, np.zeros(sample_label.shape, bool))
    assert "Paint" in caught.value.hint


def test_check_annotation_summarises_voxels_and_classes(sample_label):
    """Annotated voxel count, fraction of the volume and foreground voxels per class inside the annotation."""
    annotated = simulate_annotation(sample_label, "slices:1")
    summary = check_annotation(sample_label, annotated)
    (position,) = annotated_slices(annotated, 0)
    plane = sample_label[position]
    assert summary.annotated_voxels == plane.size
    assert summary.total_voxels == sample_label.size
    assert summary.fraction == pytest.approx(1 / sample_label.shape[0])
    assert summary.foreground_per_class == {c: int((plane == c).sum()) for c in (1, 2) if (plane == c).any()}
    assert summary.foreground_voxels == int((plane > 0).sum()) > 0
    assert summary["fraction"] == summary.fraction  # also readable like a dict
    assert summary.as_dict()["foreground_per_class"] == summary.foreground_per_class


def test_check_annotation_rejects_a_mask_on_another_grid(sample_label):
    with pytest.raises(SparseSegError, match="differs from label map shape"):
        check_annotation(sample_label, np.ones((2, 2, 2), bool))


def test_annotated_slices_lists_every_slice_that_carries_paint(sample_label):
    """Any annotated voxel marks its slice, not only full slices (boxes cover ranges of slices)."""
    annotated = np.zeros(sample_label.shape, bool)
    annotated[3, 10, 10] = True
    annotated[7:9, :2, :2] = True
    assert annotated_slices(annotated, 0) == [3, 7, 8]
    assert annotated_slices(annotated, 1) == [0, 1, 10]
    assert annotated_slices(np.zeros_like(annotated), 2) == []


# --------------------------------------------------------------------------------------------------
# Cases


def test_annotate_case_restricts_ground_truth_but_keeps_the_label(sample_case):
    """The annotated copy keeps the full label map (for scoring) and its sparse view hides the rest."""
    annotated_case = annotate_case(sample_case, "central-slice", seed=0)
    middle = sample_case.label.shape[0] // 2
    assert annotated_slices(annotated_case.annotated, 0) == [middle]
    np.testing.assert_array_equal(annotated_case.label, sample_case.label)
    sparse = annotated_case.sparse_label()
    np.testing.assert_array_equal(sparse[middle], sample_case.label[middle])
    assert (np.delete(sparse, middle, axis=0) == -1).all()
    assert sample_case.annotated is None  # the input case is left as it was


def test_cases_get_different_boxes_under_one_global_seed(sample_case):
    """The per-case seed mixes the case id in: same id and seed, same boxes; another id, other boxes."""
    twin = dataclasses.replace(sample_case, case_id="hippocampus_003")
    boxes = annotate_case(sample_case, "boxes:3:8", seed=7).annotated
    np.testing.assert_array_equal(boxes, annotate_case(sample_case, "boxes:3:8", seed=7).annotated)
    np.testing.assert_array_equal(
        boxes, simulate_annotation(sample_case.label, "boxes:3:8", seed=case_seed(7, sample_case.case_id))
    )
    assert not np.array_equal(boxes, annotate_case(twin, "boxes:3:8", seed=7).annotated)
    assert not np.array_equal(boxes, annotate_case(sample_case, "boxes:3:8", seed=8).annotated)


def test_case_seed_is_a_stable_hash_of_seed_and_case_id():
    """zlib.crc32 of "seed:case_id", not Python's per-process salted hash(): reruns draw the same boxes."""
    assert case_seed(0, "hippocampus_001") == 223757923
    assert case_seed(0, "hippocampus_001") != case_seed(1, "hippocampus_001")
    assert case_seed(0, "hippocampus_001") != case_seed(0, "hippocampus_003")


def test_annotate_case_names_the_case_in_errors(sample_case):
    with pytest.raises(SparseSegError, match=f"^{sample_case.case_id}: .*larger than the volume"):
        annotate_case(sample_case, "boxes:1:100", seed=0)


def test_painted_label_maps_are_annotated_on_every_slice_that_holds_paint(sample_case):
    """``painted``: the label map is a user's paint; each painted slice is annotated whole (its background too),
    along the axis with the fewest painted slices, as the module reads painted slices; ``painted:AXIS`` names it."""
    sample_label = sample_case.label
    painted = np.zeros_like(sample_label)
    for j in (20, 26):
        painted[:, j] = sample_label[:, j]
    mask = simulate_annotation(painted, "painted")
    assert mask[:, [20, 26]].all() and mask.sum() == 2 * mask[:, 0].size
    np.testing.assert_array_equal(annotate_case(dataclasses.replace(sample_case, label=painted), "painted").annotated, mask)
    along_k = simulate_annotation(painted, "painted:0")
    assert along_k.sum() == len(np.flatnonzero(painted.any(axis=(1, 2)))) * painted[0].size
    # one painted central slice reads as the simulated one
    central = simulate_annotation(sample_label, "slices:1")
    np.testing.assert_array_equal(simulate_annotation(np.where(central, sample_label, 0), "painted"), central)
    with pytest.raises(SparseSegError, match="no painted voxel") as error:
        simulate_annotation(np.zeros_like(sample_label), "painted")
    assert "--cases" in error.value.hint
