"""Incremental 2D self-labelling, the rounds on real cases: outward growth that never overwrites ground truth,
random order, refreshed pseudo-labels, resume, a cohort trained and saved, a collapse to background reported.

Real bundled hippocampus cases, tiny schedules (a few training steps per round): these tests check the
mechanics, not the accuracy (the benchmark in README.md does that).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.engine.sampling import UNKNOWN
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.self_labelling import RETIRED_NAMES

from self_labelling_support import TINY, new_loop


def _gt(case, merged):
    label = case.label.astype(np.int16)
    return np.where(label > 0, 1, 0) if merged else label


@pytest.mark.parametrize("name", ["self-labelling", "self-labelling-faithful"])
def test_rounds_grow_outwards_and_never_overwrite_ground_truth(cohort, name):
    loop = new_loop(cohort, name)
    merged = loop.settings.classes == "merged"
    centres = [case.image.shape[0] // 2 for case in cohort]
    fusion = loop.settings.fusion_passes if loop.settings.fuse_axes else 0  # the default ends with rounds fusing three axes
    assert loop.total == 1 + max(max(c, case.image.shape[0] - 1 - c) for c, case in zip(centres, cohort)) + fusion
    seen = 0
    for result in loop.run():
        index = result.index
        for case, centre, target, labelled in zip(cohort, centres, loop.targets, loop.labelled):
            depth = case.image.shape[0]
            # outwards: exactly the slices within index-1 of the central slice are labelled
            expected = np.abs(np.arange(depth) - centre) <= index - 1
            assert ((labelled > 0) == expected).all(), f"round {index}: {np.flatnonzero(labelled)}"
            assert labelled[centre] == 1 and (labelled[expected & (np.arange(depth) != centre)] == 2).all()
            # ground truth untouched, whatever refresh does
            assert (target[case.annotated] == _gt(case, merged)[case.annotated]).all()
            # pseudo-labelled slices carry labels (ignore leaves the unsure pixels of this barely trained net unknown)
            if index > 1:
                assert (target[labelled == 2] >= 0).any()
            assert (target[labelled == 0] == UNKNOWN).all()
        seen += 1
        if seen == 4:
            break
    assert seen == 4


def test_random_order_labels_scattered_slices(cohort):
    loop = new_loop(cohort, "self-labelling-random", total_rounds=3)
    results = list(loop.run())
    assert [r.index for r in results] == [1, 2, 3]
    spread = [np.flatnonzero(lab > 0) for lab in loop.labelled]
    assert all(len(s) == 5 for s in spread)  # GT + 2 per round
    assert any(np.diff(s).max() > 1 for s in spread)  # not one contiguous block


def test_refresh_repredicts_pseudo_labels_but_frozen_does_not(cohort):
    # the first improved configuration's ablation row (once "self-labelling-no-refresh") against the default
    frozen = new_loop(cohort, **RETIRED_NAMES["self-labelling-no-refresh"][1])
    refreshed = new_loop(cohort, "self-labelling")
    changed = {}
    for name, loop in (("frozen", frozen), ("refresh", refreshed)):
        runner = loop.run()
        next(runner), next(runner)
        after_two = [t.copy() for t in loop.targets]
        first_pseudo = [np.flatnonzero(lab == 2) for lab in loop.labelled]  # the round-2 slices
        assert all(len(s) == 2 for s in first_pseudo)
        next(runner)
        changed[name] = sum(int((t[s] != a[s]).sum()) for t, a, s in zip(loop.targets, after_two, first_pseudo))
    assert changed["frozen"] == 0
    assert changed["refresh"] > 0


@pytest.mark.parametrize("name", ["self-labelling", "self-labelling-faithful"])  # fresh / kept optimiser
def test_resume_from_a_round_state_matches_an_uninterrupted_run(cohort, name):
    cases = cohort[:2]
    uninterrupted = list(new_loop(cases, name, total_rounds=3).run())
    buffer = io.BytesIO()  # stored and read back as the worker does: tensors and plain data only
    torch.save(uninterrupted[1].state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = list(new_loop(cases, name, total_rounds=3).run(state))
    assert [r.index for r in resumed] == [3]
    for key, value in uninterrupted[2].state["network"].items():
        assert torch.equal(value, resumed[0].state["network"][key]), key
    for a, b in zip(uninterrupted[2].state["method_state"]["targets"], resumed[0].state["method_state"]["targets"]):
        assert torch.equal(a, b)
    wrong = dict(state, method="sparse-only")
    with pytest.raises(SparseSegError, match="checkpoint"):
        list(new_loop(cases, name, total_rounds=3).run(wrong))


def test_cohort_train_save_load_predict(cohort, tmp_path):
    options = MethodOptions(budget="quick", seed=0, device="cpu", extra={**TINY, "max_rounds": 3})
    segmenter = get_method("self-labelling").train(cohort[:3], options, SilentReporter(), validation=cohort[3:])
    assert [s["round"] for s in segmenter.round_snapshots] == [1, 2, 3]
    assert len(segmenter.training["rounds"]) == 3 and segmenter.training["rounds"][0]["augmented"]
    assert not segmenter.training["rounds"][1]["augmented"]  # augmentation on the first model only
    loaded = load_segmenter(segmenter.save(tmp_path / "model"))
    assert loaded.postprocess == "lcc-fill" and loaded.network_config.arch == "plain"
    assert loaded.network_config.context_slices == 1 and loaded.class_names == {1: "Anterior", 2: "Posterior"}
    labels, probabilities = loaded.predict(cohort[0].image)
    assert labels.shape == cohort[0].image.shape and probabilities.shape == (3,) + labels.shape
    expected, _ = segmenter.predict(cohort[0].image)
    assert (labels == expected).all()


def test_a_cohort_without_validation_holds_out_fifteen_percent(sample_dataset):
    # as the paper's 70/15/15 protocol: early stopping on held-out annotated slices, not on the training loss
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:10]]
    logged = []

    class Log(SilentReporter):
        def log(self, message):
            logged.append(message)

    options = MethodOptions(budget="quick", seed=0, device="cpu", extra={**TINY, "max_rounds": 1})
    segmenter = get_method("self-labelling").train(cases, options, Log())
    assert any("2 of 10 volumes held out for validation" in m for m in logged)
    assert segmenter.training["rounds"][0]["monitor"] == "validation dice"


def test_a_network_that_proposes_only_background_is_reported_not_silently_propagated(cohort, monkeypatch):
    """An undertrained first model that sees no foreground anywhere would teach every later round
    "all background" and end empty; the round says so (warning + metric) instead of hiding it."""
    import SparseSegLib.methods.self_labelling.labelling as module  # where the loop's labelling step predicts slices

    def background_only(network, image, slices, context, multiple):
        probabilities = np.zeros((3, len(slices), *image.shape[1:]), np.float32)  # (C, n, j, i)
        probabilities[0] = 1.0
        return probabilities

    class Recorder(SilentReporter):
        def __init__(self):
            self.messages = []

        def warning(self, message, hint):
            self.messages.append((message, hint))

    loop = new_loop(cohort, total_rounds=3)
    loop.reporter = Recorder()
    monkeypatch.setattr(module, "predict_slices", background_only)
    first, second, third = list(loop.run())
    assert not first.metrics["collapsed_to_background"]
    assert second.metrics["collapsed_to_background"] and second.metrics["pseudo_foreground_voxels"] == 0
    # the default refreshes pseudo-labels, which often recover from one empty round: it warns on the second
    (message, hint), = loop.reporter.messages
    assert "round 3/3" in message and "no foreground" in message and "iterations" in hint
    frozen = new_loop(cohort, "self-labelling-faithful", total_rounds=2)  # frozen pseudo-labels: at once
    frozen.reporter = Recorder()
    list(frozen.run())
    assert len(frozen.reporter.messages) == 1 and "round 2/2" in frozen.reporter.messages[0][0]

