"""Annotate next (:mod:`SparseSegLib.jobs.suggestion`) on the bundled hippocampus scan: the suggested slice
lies in the volume, is never an annotated one, moves on once it is painted, and prefers the slices a user
gains most from painting (long uncertain boundaries, the object's uncertain end) over faint uncertainty
far from the object. Class probabilities here are the reference softened by a Gaussian (a network's
typical boundary uncertainty, without training one); the worker test (Testing/test_worker.py) checks
the same on a trained network's round.
"""

from __future__ import annotations

import types
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from SparseSegLib.jobs.events import EventWriter, format_event, read_events
from SparseSegLib.jobs.suggestion import (
    SUGGESTION_KEY,
    SuggestedSlice,
    method_suggestion,
    normalized_entropy,
    slice_scores,
    suggest_slice,
    suggestion_axis,
)


def soft_probabilities(label: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """``(C, k, j, i)`` probabilities: each class's one-hot map blurred, renormalised to sum to 1."""
    classes = int(label.max()) + 1
    blurred = np.stack([ndimage.gaussian_filter((label == c).astype(np.float32), sigma) for c in range(classes)])
    return blurred / blurred.sum(axis=0, keepdims=True)


def central_slice(label: np.ndarray, axis: int) -> int:
    others = tuple(a for a in range(3) if a != axis)
    painted = np.flatnonzero((label > 0).any(axis=others))
    return int(painted[len(painted) // 2])


def slab(shape, axis: int, indices) -> np.ndarray:
    mask = np.zeros(shape, bool)
    index: list = [slice(None)] * 3
    index[axis] = list(indices)
    mask[tuple(index)] = True
    return mask


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_suggestion_is_an_unannotated_slice_and_moves_on_once_painted(sample_label, axis):
    """From the central painted slice, five rounds of 'paint the suggested slice': every suggestion lies
    in the volume, none is a slice painted before, and each painted one is never suggested again."""
    probabilities = soft_probabilities(sample_label)
    uncertainty = normalized_entropy(probabilities)
    predicted = probabilities.argmax(axis=0).astype(np.uint8)
    painted = [central_slice(sample_label, axis)]
    for _ in range(5):
        annotated = slab(sample_label.shape, axis, painted)
        suggestion = suggest_slice(uncertainty, predicted, annotated, axis)
        assert suggestion is not None and suggestion["axis"] == axis
        assert 0 <= suggestion["index"] < sample_label.shape[axis]
        assert suggestion["index"] not in painted
        assert suggestion["score"] > 0
        i, j, k = suggestion["ijk"]  # a voxel of the suggested slice, near the object
        assert (k, j, i)[axis] == suggestion["index"]
        assert all(0 <= v < n for v, n in zip((k, j, i), sample_label.shape))
        painted.append(suggestion["index"])
    assert len(set(painted)) == len(painted)


def test_the_uncertainty_map_slab_by_slab_is_the_whole_grids(sample_label):
    probabilities = soft_probabilities(sample_label)
    whole = normalized_entropy(probabilities, slab=probabilities.shape[1])
    assert whole.dtype == np.float32 and whole.shape == sample_label.shape and 0 < whole.max() <= 1
    np.testing.assert_array_equal(normalized_entropy(probabilities, slab=4), whole)  # a last slab shorter than 4
    assert normalized_entropy(np.stack([np.ones((3, 2, 2)), np.zeros((3, 2, 2))])).max() < 1e-5  # certain: 0


def test_annotated_slices_score_nothing_and_partly_annotated_ones_less(sample_label):
    uncertainty = normalized_entropy(soft_probabilities(sample_label))
    annotated = slab(sample_label.shape, 0, [15])
    annotated[20, :25] = True  # a box covering part of slice 20
    before = slice_scores(uncertainty, sample_label, np.zeros_like(annotated), 0)
    after = slice_scores(uncertainty, sample_label, annotated, 0)
    assert np.isnan(after[15]) and not np.isnan(before[15])
    assert 0 < after[20] < before[20]
    others = [s for s in range(sample_label.shape[0]) if s not in (15, 20)]
    assert np.allclose(after[others], before[others])


def test_a_long_uncertain_boundary_beats_a_few_very_uncertain_voxels(sample_label):
    """The score is a sum: the user paints the whole slice, so the slice with the most doubt wins."""
    uncertainty = np.zeros(sample_label.shape, np.float32)
    boundary = (sample_label > 0) & ~ndimage.binary_erosion(sample_label > 0)
    uncertainty[12][boundary[12]] = 0.4  # a long, moderately uncertain boundary
    object_voxels = np.argwhere(sample_label[22] > 0)[:5]
    uncertainty[22][tuple(object_voxels.T)] = 1.0  # five voxels at maximal doubt
    annotated = slab(sample_label.shape, 0, [17])
    assert boundary[12].sum() * 0.4 > 5
    assert suggest_slice(uncertainty, sample_label, annotated, 0)["index"] == 12


def test_faint_doubt_far_from_the_object_does_not_outweigh_its_boundary(sample_label):
    """Confident background (entropy 0.1) over a whole slice far from the object adds more than a boundary
    would, yet only voxels near the predicted object (or really uncertain ones) count."""
    uncertainty = np.zeros(sample_label.shape, np.float32)
    boundary = (sample_label > 0) & ~ndimage.binary_erosion(sample_label > 0)
    uncertainty[10][boundary[10]] = 0.6
    uncertainty[32] = 0.1  # slice 32 holds no object (it spans slices 5-29)
    assert uncertainty[32].sum() > uncertainty[10].sum()
    annotated = slab(sample_label.shape, 0, [17])
    assert suggest_slice(uncertainty, sample_label, annotated, 0)["index"] == 10


def test_doubt_over_whole_slices_far_from_the_object_is_not_suggested(sample_label):
    """A mean teacher's dropout passes doubt a large part of every slice, most at the volume's ends: a slice with
    no object, 5 slices before its start and unsure (0.7) everywhere, must not beat the object's boundary. With no
    object predicted at all, doubt anywhere is all there is, and it is suggested."""
    uncertainty = np.zeros(sample_label.shape, np.float32)
    boundary = (sample_label > 0) & ~ndimage.binary_erosion(sample_label > 0)
    uncertainty[10][boundary[10]] = 0.6
    uncertainty[0] = 0.7  # the object spans slices 5-29
    assert not (sample_label[:2] > 0).any() and uncertainty[0].sum() > uncertainty[10].sum()
    annotated = slab(sample_label.shape, 0, [17])
    assert suggest_slice(uncertainty, sample_label, annotated, 0)["index"] == 10
    assert suggest_slice(uncertainty, np.zeros_like(sample_label), annotated, 0)["index"] == 0


def test_the_uncertain_slices_past_the_predicted_end_count(sample_label):
    """The prediction stops at slice 20 while the object goes on: slice 21 has no predicted foreground, but
    its object is in doubt (p = 0.45): with the predicted object's boundary fairly sure, it is the one to
    paint. (With a blurrier boundary a slice through the object's middle may win, as it should.)"""
    predicted = sample_label.copy()
    predicted[21:] = 0
    probabilities = soft_probabilities(predicted, sigma=0.4)
    missed = sample_label[21] > 0
    probabilities[:, 21][:, missed] = 0.0
    probabilities[0, 21][missed] = 0.55
    probabilities[1, 21][missed] = 0.45
    uncertainty = normalized_entropy(probabilities)
    annotated = slab(sample_label.shape, 0, [15])
    scores = slice_scores(uncertainty, predicted, annotated, 0)
    assert suggest_slice(uncertainty, predicted, annotated, 0)["index"] == 21, scores
    assert scores[21] > 0.5 * 0.63 * missed.sum()  # the missed object's voxels count (0.63 = log 2 / log 3)


def test_no_doubt_means_no_suggestion(sample_label):
    certain = np.zeros(sample_label.shape, np.float32)
    assert suggest_slice(certain, sample_label, slab(sample_label.shape, 0, [15]), 0) is None
    everything = np.ones(sample_label.shape, bool)
    assert suggest_slice(np.ones_like(certain), sample_label, everything, 0) is None


def test_the_axis_is_the_one_the_user_paints_on(sample_label):
    shape = sample_label.shape
    on_j = np.zeros_like(sample_label)
    on_j[:, [20, 30]] = sample_label[:, [20, 30]]
    assert suggestion_axis({"kind": "slices", "axis": "auto"}, on_j, slab(shape, 1, [20, 30])) == 1
    assert suggestion_axis({"kind": "slices", "axis": 2}, on_j, slab(shape, 2, [5])) == 2
    assert suggestion_axis({"kind": "boxes", "boxes": []}, on_j, np.zeros(shape, bool)) == 0
    # a Continue stage's explicit mask: whole slices along i, plus part of a box
    mask = slab(shape, 2, [10, 17])
    mask[3:6, 3:6, 3:6] = True
    assert suggestion_axis({"kind": "mask", "mask": "annotated.nrrd"}, on_j, mask) == 2
    assert suggestion_axis({"kind": "mask", "mask": "annotated.nrrd"}, on_j, np.zeros(shape, bool)) == 0
    assert suggestion_axis({"kind": "full"}, on_j, np.ones(shape, bool)) is None


def test_a_methods_own_suggestion_is_honoured_when_it_is_a_slice(sample_label):
    shape = sample_label.shape
    assert method_suggestion(7, 0, shape) == {"axis": 0, "index": 7}
    assert method_suggestion({"axis": 2, "index": 30, "score": 1.5, "ijk": [30, 4, 5]}, 0, shape) == \
        {"axis": 2, "index": 30, "score": 1.5, "ijk": [30, 4, 5]}
    assert method_suggestion(np.int64(3), 1, shape) == {"axis": 1, "index": 3}
    for bad in (35, -1, True, "7", {"axis": 3, "index": 1}, {"axis": 0}, {"index": 2.5}, None):
        assert method_suggestion(bad, 0, shape) is None, bad


def test_the_worker_honours_a_method_suggestion_and_warns_about_a_bad_one(sample_case, tmp_path):
    """``Worker.suggest`` as write_round calls it, with a real event file."""
    from SparseSegLib.worker import StopRequest, Worker, WorkerLog

    events = EventWriter(tmp_path / "events.jsonl")
    worker = Worker(tmp_path, events, StopRequest(tmp_path), WorkerLog(tmp_path / "worker.log"))
    painted = np.zeros_like(sample_case.label)
    painted[17] = sample_case.label[17]
    case = replace(sample_case, label=painted, annotated=slab(painted.shape, 0, [17]))  # as read_job_case gives it
    spec = types.SimpleNamespace(region={"kind": "slices", "axis": "auto"})
    uncertainty = normalized_entropy(soft_probabilities(sample_case.label))
    computed = worker.suggest(spec, case, sample_case.label, uncertainty, None)
    assert computed == suggest_slice(uncertainty, sample_case.label, case.annotated, 0)
    assert computed["index"] != 17
    assert worker.suggest(spec, case, sample_case.label, uncertainty, 9) == {"axis": 0, "index": 9}
    assert worker.suggest(spec, case, sample_case.label, None, None) is None  # no uncertainty: none
    assert worker.suggest(spec, case, sample_case.label, uncertainty, 99) == computed
    events.close()
    warnings = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "warning"]
    assert len(warnings) == 1 and "99" in warnings[0]["message"] and "Ignored" in warnings[0]["hint"]


def test_the_session_reads_a_suggestion_back(sample_label):
    record = {"round": 3, SUGGESTION_KEY: {"axis": 1, "index": 14, "score": 20.5, "ijk": [3, 14, 9]}}
    suggestion = SuggestedSlice.from_record(record)
    assert suggestion == SuggestedSlice(1, 14, 20.5, (3, 14, 9), 3)
    assert suggestion.describe() == "slice 14 along j"
    for bad in ({}, {SUGGESTION_KEY: None}, {SUGGESTION_KEY: {"axis": 4, "index": 1}},
                {SUGGESTION_KEY: {"axis": 0, "index": -2}}, {SUGGESTION_KEY: {"axis": 0, "index": True}}):
        assert SuggestedSlice.from_record(bad) is None
    event = {"event": "round", "round": 3, "rounds": 5, "files": {"label": "rounds/003/label.nrrd"},
             SUGGESTION_KEY: record[SUGGESTION_KEY]}
    assert format_event(event).endswith("annotate next: slice 14 along j")
