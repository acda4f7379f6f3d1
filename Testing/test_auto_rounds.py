"""Rounds "auto" (job.json ``"rounds": null``, the module's default) for every method, and what Continue runs then.

Before, only ``propagate``, ``collaborative`` and ``mean-teacher`` planned their own rounds: ``gradual`` and
``self-labelling`` ran round 1 alone (no growth, no self-labelling), and a Continue ran *nothing* for every method
but ``propagate`` and ``collaborative`` ("nothing to resume"), silently ignoring the corrected slices. Real worker
runs on the bundled hippocampus scan (a few iterations, one thread); the stage rule itself on plain values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SparseSegLib.case import paint_digest
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.continuation import continue_job
from SparseSegLib.jobs.events import read_events
from SparseSegLib.methods.base import MethodOptions
from SparseSegLib.methods.gradual.method import GradualLearning
from SparseSegLib.methods.self_labelling import SelfLabelling
from SparseSegLib.methods.self_labelling.schedule import natural_rounds
from SparseSegLib.worker import run_job
from SparseSegLib.worker.stages import CONTINUE_ROUNDS, stage_record, stage_rounds

#: One thread: two torch threads on a busy two-core machine run many times slower than one (the job sets it).
TINY = {"rounds": None, "iterations_per_round": 3, "batch_size": 2, "threads": 1}


def central_paint(label: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The object's central slice along k painted: label map, annotated mask, slice index."""
    k = int(np.flatnonzero(label.any(axis=(1, 2))).mean())
    painted, mask = np.zeros_like(label), np.zeros(label.shape, bool)
    painted[k], mask[k] = label[k], True
    return painted, mask, k


def streamed(jobdir) -> list[int]:
    return [e["round"] for e in read_events(jobdir / layout.EVENTS_FILE) if e["event"] == "round"]


def logged(jobdir) -> list[str]:
    return [e["message"] for e in read_events(jobdir / layout.EVENTS_FILE) if e["event"] == "log"]


def start_and_continue(tmp_path, case, method: str, method_options: dict | None = None):
    """Start with Rounds auto, then Continue with one more painted slice: the two stages' folders."""
    painted, mask, k = central_paint(case.label)
    first = Job.create(tmp_path / "stage-1", case.image, case.geometry, painted, method, classes={1: "A", 2: "P"},
                       device="cpu", parameters={**TINY, "method_options": method_options or {}})
    assert run_job(first.directory, install_signals=False) == layout.EXIT_FINISHED
    label, mask = painted.copy(), mask.copy()
    label[k + 3], mask[k + 3] = case.label[k + 3], True
    second = continue_job(first.directory, tmp_path / "stage-2", label, mask)
    assert run_job(second.directory, install_signals=False, resume=True) == layout.EXIT_FINISHED
    return first.directory, second.directory


def test_the_stage_rule_tells_a_resumed_run_from_a_continue():
    class Planned:  # a method with its own plan for a fresh job only
        def planned_rounds(self, case, options, state=None):
            return 5

    class Staged(Planned):  # a method that reads the paint from its state
        plans_stages = True

    auto, fixed = MethodOptions(rounds=None), MethodOptions(rounds=9)
    assert stage_rounds(Planned(), None, auto, None, 0, None, "a") == 5  # fresh: the method's plan
    assert stage_rounds(Planned(), None, auto, {}, 3, stage_record("a", 5, 5), "a") == 5  # interrupted: its stage's end
    assert stage_rounds(Planned(), None, auto, {}, 5, stage_record("a", 5, 5), "b") == 5 + CONTINUE_ROUNDS  # new paint
    assert stage_rounds(Staged(), None, auto, {}, 5, stage_record("a", 5, 5), "b") == 5  # the method decides
    assert stage_rounds(object(), None, auto, None, 0, None, "a") == 1  # no plan at all: one round
    # a stage the method ended early (4 of 9 planned) stays ended for the same paint, with a fixed count too
    assert stage_rounds(Planned(), None, fixed, {}, 4, stage_record("a", 4, 9), "a") == 4
    assert stage_rounds(Planned(), None, fixed, {}, 4, stage_record("a", 4, 9), "b") == 9
    assert stage_rounds(Planned(), None, fixed, {}, 4, stage_record("a", 4, 4), "a") == 9  # ended as planned: the count


def test_the_paint_digest_sees_labels_but_only_where_painted(sample_case):
    painted, mask, k = central_paint(sample_case.label)
    case = sample_case.with_annotation(mask)
    before = paint_digest(case)
    case.label[k + 5] = 0  # off the paint: the user's paint is unchanged
    assert paint_digest(case) == before
    object_voxel = tuple(np.argwhere(case.label[k] > 0)[0])
    case.label[(k,) + object_voxel] = 3 - case.label[(k,) + object_voxel]  # the other class, same voxels painted
    assert paint_digest(case) != before


def test_sparse_only_continue_trains_again_and_a_finished_resume_does_not(tmp_path, sample_case):
    first, second = start_and_continue(tmp_path, sample_case, "sparse-only")
    assert streamed(first) == [1]
    assert streamed(second) == [1 + r for r in range(1, CONTINUE_ROUNDS + 1)]
    assert any("for the new paint" in message for message in logged(second))
    # the same paint again (a resume of the finished stage): nothing new runs
    assert run_job(second, install_signals=False, resume=True) == layout.EXIT_FINISHED
    assert streamed(second) == [2, 3] and "nothing to resume: every round is complete" in logged(second)


def test_gradual_auto_grows_until_covered_and_trains_again_on_continue(tmp_path, sample_case):
    first, second = start_and_continue(tmp_path, sample_case, "gradual", {"rounds": 4, "step": 20})
    rounds = [e for e in read_events(first / layout.EVENTS_FILE) if e["event"] == "round"]
    assert len(rounds) >= 2, "auto must grow the painted slice, not stop after round 1"
    assert rounds[-1]["training"]["covered"] and rounds[-1]["rounds"] == len(rounds) <= 4
    assert rounds[1]["training"]["pseudo_labelled_voxels"] > 0
    done = len(rounds)
    assert streamed(second) == [done + 1, done + 2], "a Continue after coverage must train on the new paint"


def test_a_gradual_job_that_ended_once_covered_is_not_resumed_with_the_same_paint(tmp_path, sample_case):
    painted, _, _ = central_paint(sample_case.label)
    job = Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, painted, "gradual",
                     classes={1: "A", 2: "P"}, device="cpu",
                     parameters={**TINY, "rounds": 6, "method_options": {"step": 20}})
    assert run_job(job.directory, install_signals=False) == layout.EXIT_FINISHED
    ended = streamed(job.directory)
    assert len(ended) < 6  # covered early
    assert run_job(job.directory, install_signals=False, resume=True) == layout.EXIT_FINISHED
    assert streamed(job.directory) == ended and "nothing to resume: every round is complete" in logged(job.directory)


def test_self_labelling_auto_plans_until_every_slice_is_labelled(sample_case):
    _, mask, _ = central_paint(sample_case.label)
    across_i = np.zeros(mask.shape, bool)
    across_i[:, :, mask.shape[2] // 2] = True  # painted across array axis 2: the plan counts slices along it
    method, options = SelfLabelling(), MethodOptions(rounds=None)
    settings = method.job_settings(options)
    for annotated, axis in ((mask, 0), (across_i, 2)):
        plan = method.planned_rounds(sample_case.with_annotation(annotated), options)
        per_slice = annotated.any(axis=tuple(a for a in range(3) if a != axis))
        assert plan == natural_rounds([per_slice], settings) > 2


def test_gradual_rounds_option_is_checked():
    with pytest.raises(Exception, match="whole number"):
        GradualLearning().planned_rounds(None, MethodOptions(rounds=None, extra={"rounds": "0"}))
    assert GradualLearning().planned_rounds(None, MethodOptions(rounds=None)) == 11


def test_self_labelling_continue_trains_on_the_corrected_slice(tmp_path, sample_case):
    """The restored pseudo-labels must not hide a corrected slice (the checkpoint's targets held the old ones)."""
    painted, mask, k = central_paint(sample_case.label)
    first = Job.create(tmp_path / "stage-1", sample_case.image, sample_case.geometry, painted, "self-labelling",
                       classes={1: "A", 2: "P"}, device="cpu", parameters={**TINY, "rounds": 2})
    assert run_job(first.directory, install_signals=False) == layout.EXIT_FINISHED
    before = torch.load(layout.checkpoint_path(first.directory, 2), weights_only=True)["state"]["method_state"]
    corrected = k + 1  # pseudo-labelled by round 2 (one slice each side per round here)
    assert int(before["labelled"][0][corrected]) == 2
    label, mask = painted.copy(), mask.copy()
    label[corrected], mask[corrected] = sample_case.label[corrected], True
    second = continue_job(first.directory, tmp_path / "stage-2", label, mask)
    assert run_job(second.directory, install_signals=False, resume=True) == layout.EXIT_FINISHED
    after = torch.load(layout.checkpoint_path(second.directory, 4), weights_only=True)["state"]["method_state"]
    assert int(after["labelled"][0][corrected]) == 1
    assert np.array_equal(after["targets"][0][corrected].numpy(), sample_case.label[corrected])


def test_mean_teacher_continue_trains_as_many_iterations_per_round_as_its_start(tmp_path, sample_case):
    """The job's total iterations split over Start's 3 rounds; a Continue's 2 rounds must train as many each, with the
    schedules stretched over them. Before, the total was split over 5 rounds anew, every added round's target step
    lay behind the checkpoint's, and the Continue trained nothing (hippocampus dev scans: Dice unchanged)."""
    tiny = {"dims": 2, "channels": [4, 8], "passes": 2, "uncertainty_passes": 2}
    painted, mask, k = central_paint(sample_case.label)
    first = Job.create(tmp_path / "stage-1", sample_case.image, sample_case.geometry, painted, "mean-teacher",
                       classes={1: "A", 2: "P"}, device="cpu",
                       parameters={"rounds": None, "iterations": 9, "threads": 1, "method_options": tiny})
    assert run_job(first.directory, install_signals=False) == layout.EXIT_FINISHED
    label, mask = painted.copy(), mask.copy()
    label[k + 3], mask[k + 3] = sample_case.label[k + 3], True
    second = continue_job(first.directory, tmp_path / "stage-2", label, mask).directory
    assert run_job(second, install_signals=False, resume=True) == layout.EXIT_FINISHED
    rounds = [e for e in read_events(second / layout.EVENTS_FILE) if e["event"] == "round"]
    assert [e["round"] for e in rounds] == [4, 5]
    assert [e["training"]["iterations_total"] for e in rounds] == [12, 15]
    assert all(e["training"]["loss"] is not None for e in rounds)


def test_gradual_freeze_continue_trains_on_the_corrected_slice(tmp_path, sample_case):
    """``relabel=freeze`` keeps earlier pseudo-labels from round to round, and a Continue restores them from the
    checkpoint: a corrected slice must still replace them as ground truth."""
    painted, mask, k = central_paint(sample_case.label)
    options = {"relabel": "freeze", "step": 2, "confidence": "none", "anchor": False}
    first = Job.create(tmp_path / "stage-1", sample_case.image, sample_case.geometry, painted, "gradual",
                       classes={1: "A", 2: "P"}, device="cpu", parameters={**TINY, "rounds": 2, "method_options": options})
    assert run_job(first.directory, install_signals=False) == layout.EXIT_FINISHED
    before = torch.load(layout.checkpoint_path(first.directory, 2), weights_only=True)["state"]["method_state"]
    corrected = k + 1  # inside the region grown by round 2
    pseudo = before["targets"][0][corrected].numpy()
    assert (pseudo >= 0).all() and not np.array_equal(pseudo, sample_case.label[corrected]), \
        "the slice must hold (wrong) pseudo-labels before the correction, or the test shows nothing"
    label, mask = painted.copy(), mask.copy()
    label[corrected], mask[corrected] = sample_case.label[corrected], True
    second = continue_job(first.directory, tmp_path / "stage-2", label, mask)
    assert run_job(second.directory, install_signals=False, resume=True) == layout.EXIT_FINISHED
    after = torch.load(layout.checkpoint_path(second.directory, 4), weights_only=True)["state"]["method_state"]
    assert np.array_equal(after["targets"][0][corrected].numpy(), sample_case.label[corrected])
    assert np.array_equal(after["targets"][0][k].numpy(), sample_case.label[k])
