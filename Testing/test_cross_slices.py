"""Slices painted across two axes (a user who corrects in another view) on a real sample scan: the mask is read as
whole slices per axis, the propagation runs along the axis painted most (ties: the larger outline), the slice
across the other axis is ground truth and shows how far an open end reaches."""

from __future__ import annotations

import numpy as np

from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.propagation import open_end_reach, propagate_slices
from SparseSegLib.jobs.regions import propagation_axis, single_view_axis, whole_slices_by_axis
from SparseSegLib.methods import get_method
from SparseSegLib.methods.base import MethodOptions, SilentReporter
from SparseSegLib.methods.propagate.settings import PropagateSettings
from SparseSegLib.methods.propagate.volume import PaintedVolume

QUICK = {"iterations": 20, "batch_size": 4}


def centre(label: np.ndarray, axis: int) -> int:
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero((label > 0).any(axis=other))
    return int((present[0] + present[-1]) // 2)


def painted(shape: tuple[int, ...], slices: dict[int, list[int]]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for axis, indices in slices.items():
        index: list = [slice(None)] * 3
        index[axis] = indices
        mask[tuple(index)] = True
    return mask


def test_a_mask_of_whole_slices_across_two_axes_is_read_as_both():
    mask = painted((6, 7, 8), {0: [2, 4], 2: [3]})
    assert whole_slices_by_axis(mask) == {0: [2, 4], 2: [3]}
    assert whole_slices_by_axis(painted((6, 7, 8), {1: [5]})) == {1: [5]}
    boxes = np.zeros((6, 7, 8), bool)
    boxes[1:3, 2:4, 2:6] = True
    assert whole_slices_by_axis(boxes) == {}  # not whole slices
    assert whole_slices_by_axis(np.ones((3, 3, 3), bool)) == {0: [0, 1, 2]}  # full: one axis says it all
    assert whole_slices_by_axis(np.zeros((3, 3, 3), bool)) == {}


def test_the_axis_painted_most_leads_then_the_larger_outline(sample_case):
    label = sample_case.label
    along_k, along_i = centre(label, 0), centre(label, 2)
    assert propagation_axis(painted(label.shape, {0: [along_k - 2, along_k + 2], 2: [along_i]}), label) == 0
    # one slice each: the one holding more of the object leads, whichever axis that is
    one_each = painted(label.shape, {0: [along_k], 2: [along_i]})
    assert (label[:, :, along_i] > 0).sum() > (label[along_k] > 0).sum()  # this scan: the i-slice runs along it
    assert propagation_axis(one_each, label) == 2
    smaller_i = painted(label.shape, {0: [along_k], 2: [int(np.flatnonzero((label > 0).any(axis=(0, 1)))[0])]})
    assert propagation_axis(smaller_i, label) == 0  # an i-slice at the object's edge holds less: k leads
    assert propagation_axis(painted(label.shape, {1: [3]}), label) == 1


def test_a_slice_across_the_length_carries_an_open_end_as_far_as_it_shows_the_object(sample_case):
    """From one k-slice an open end of two radii fades before the object ends; a slice painted across axis 2 that
    shows the object going on lets the chain carry it unfaded that far. With nothing shown, the result is the same
    as before."""
    label = sample_case.label
    k = centre(label, 0)
    image, spacing = normalize(sample_case.image), sample_case.geometry.spacing_kji
    reach = lambda start: open_end_reach(label[start], spacing, 2.0)  # noqa: E731  (fades within the sample's object)
    plain = propagate_slices(image, label, [k], 3, open_end_reach=reach)
    same = propagate_slices(image, label, [k], 3, open_end_reach=reach, known_reach=lambda start, direction: 0)
    np.testing.assert_array_equal(plain, same)
    present = np.flatnonzero((label > 0).any(axis=(1, 2)))
    far = int(present[-1]) - k  # the object's last slice, as a slice across its length shows it
    shown = propagate_slices(image, label, [k], 3, open_end_reach=reach,
                             known_reach=lambda start, direction: far if direction > 0 else 0)
    object_plain, object_shown = plain[1:].sum(0), shown[1:].sum(0)
    beyond = slice(k + 1, k + far + 1)
    assert (object_shown[beyond] >= object_plain[beyond] - 1e-6).all()
    assert object_shown[beyond].max(axis=(1, 2)).min() > 0.5  # every slice up to the shown end keeps the object
    assert object_plain[k + far].max() < 0.5 <= object_shown[k + far].max()  # plain: faded out before that end
    np.testing.assert_array_equal(shown[:, :k], plain[:, :k])  # the other end: nothing shown, nothing changed


def test_the_start_method_propagates_from_one_axis_and_keeps_the_other_as_ground_truth(sample_case):
    """Two slices across i and one across k: the job propagates across i, returns all three exactly, suggests
    along i, and Save model runs its networks across the axes they learnt on (the i frame, not k)."""
    from SparseSegLib.methods.propagate.model import segmenter_from_state

    label = sample_case.label
    along_k, along_i = centre(label, 0), centre(label, 2)
    mask = painted(label.shape, {0: [along_k], 2: [along_i - 3, along_i + 3]})
    case = sample_case.with_annotation(mask)
    volume = PaintedVolume.from_case(case, PropagateSettings())
    assert volume.axis == propagation_axis(mask, label) == 2 and len(volume.painted) == 2
    assert volume.cross.any() and not volume.cross[volume.painted].any()
    method = get_method("propagate")
    options = MethodOptions(device="cpu", extra=dict(QUICK), rounds=None)
    results = list(method.run_rounds([case], options, SilentReporter()))
    assert [r.metrics["step"] for r in results] == ["registration", "network"]
    for result in results:
        labels = result.labels[case.case_id]
        np.testing.assert_array_equal(labels[mask], label[mask])  # both painted slices come back exactly
    assert results[-1].metrics["suggested_slice"]["axis"] == volume.axis
    assert segmenter_from_state(case, options, results[-1].state).network.axes[0] == 2


def test_edits_in_two_views_are_the_slices_they_lie_on_not_every_slice_they_cross(sample_label):
    import pytest

    from SparseSegLib.errors import SparseSegError
    from SparseSegLib.jobs.regions import correction_planes
    from SparseSegLib.session.corrections import corrected_planes, describe_planes

    k, i = centre(sample_label, 0), centre(sample_label, 2)
    changed = np.zeros(sample_label.shape, bool)
    changed[k, 5:15, 5:15] = True  # an axial correction
    changed[3:20, 8:20, i] = True  # and a sagittal one, crossing 17 axial slices
    assert correction_planes(changed, prefer=0) == {0: [k], 2: [i]}
    assert corrected_planes(changed, 0, "propagate") == {0: [k], 2: [i]}
    assert describe_planes({0: [k], 2: [i]}) == f"1 along axis 0 (k): {k}; 1 along axis 2 (i): {i}"
    sagittal = np.zeros(sample_label.shape, bool)
    sagittal[3:20, 8:20, i] = True
    # a method that needs slices across one axis is told where to correct, instead of 17 axial slices of the
    # unreviewed result silently becoming ground truth
    with pytest.raises(SparseSegError, match="across axis 2") as raised:
        corrected_planes(sagittal, 0, "self-labelling")
    assert "propagate" in raised.value.hint
    axial = np.zeros(sample_label.shape, bool)
    axial[k, 5:15, 5:15] = True
    assert corrected_planes(axial, 0, "self-labelling") == {0: [k]}
    assert corrected_planes(np.zeros_like(axial), 0, "propagate") == {}
    one = np.zeros(sample_label.shape, bool)
    one[k, 7, 9] = True  # one voxel lies on a slice of each axis: the job's axis wins the tie
    assert corrected_planes(one, 0, "propagate") == {0: [k]} and corrected_planes(one, 2, "propagate") == {2: [9]}


def test_a_single_axis_method_takes_its_own_axis_and_names_a_view_with_fewer_slices():
    """The one rule behind the module's and the CLI's correction messages (counts: slices per axis)."""
    assert single_view_axis([2, 30, 25], 0) == (0, None)  # painted across the job's axis
    assert single_view_axis([30, 25, 1], 0) == (0, 2)  # one sagittal slice: the other view is named
    assert single_view_axis([3, 3, 3], 1) == (1, None)  # a tie is not another view
    assert single_view_axis([5, 0, 2], 0) == (0, 2)  # an axis with no slice says nothing
    assert single_view_axis([9, 4, 0], None) == (1, None)  # ROI boxes: the fewest slices
    assert single_view_axis([0, 0, 0], None) == (0, None)


def test_a_continued_file_with_a_slice_painted_in_another_view_adds_that_slice(sample_label):
    from SparseSegLib.jobs.continuation import corrected_annotation, job_slice_axis

    k, i = centre(sample_label, 0), centre(sample_label, 2)
    mask = painted((sample_label.shape), {0: [k]})
    previous = np.where(mask, sample_label, 0)
    corrected = previous.copy()
    corrected[:, :, i] = sample_label[:, :, i]  # the file: the axial slice so far and a new sagittal one
    correction = corrected_annotation(previous, mask, corrected, job_axis=0, any_view=True)
    assert (correction.axis, correction.slices, correction.across) == (2, [i], {}) and correction.count == 1
    assert correction.describe() == f"newly painted slice(s): 1 along axis 2 (i): {i}"
    np.testing.assert_array_equal(correction.mask, painted(sample_label.shape, {0: [k], 2: [i]}))
    np.testing.assert_array_equal(correction.label[correction.mask], sample_label[correction.mask])

    class Spec:
        region = {"kind": "mask"}

    # the job's axis is the one the method propagates: one slice each, the i-slice holds more of the object
    taken = job_slice_axis(Spec(), correction.label, correction.mask)
    assert taken == propagation_axis(correction.mask, sample_label) == 2


def test_the_view_suggestion_asks_for_the_largest_outline_across_another_axis_then_goes_on_along_one(sample_case):
    from SparseSegLib.methods.propagate import _suggestion

    label = sample_case.label
    k = centre(label, 0)
    settings = PropagateSettings(suggest="view")
    volume = PaintedVolume.from_case(sample_case.with_annotation(painted(label.shape, {0: [k]})), settings)
    predicted = label[(slice(None),) + volume.window]  # a perfect result, on the method's cropped grid
    outlines = {a: (centre(label, a), int((np.take(label, centre(label, a), axis=a) > 0).sum())) for a in (1, 2)}
    axis = max(outlines, key=lambda a: outlines[a][1])
    assert _suggestion(volume, predicted, "view") == {"axis": axis, "index": outlines[axis][0]}  # on the case's grid
    assert _suggestion(volume, predicted, "volume")["axis"] == 0
    both = sample_case.with_annotation(painted(label.shape, {0: [k], axis: [outlines[axis][0]]}))
    crossed = PaintedVolume.from_case(both, settings)
    assert _suggestion(crossed, label[(slice(None),) + crossed.window] if crossed.axis == 0 else
                       np.moveaxis(label, crossed.axis, 0)[(slice(None),) + crossed.window], "view")["axis"] == crossed.axis
