"""Incremental 2D self-labelling: round rule, thresholds, GT protection, resume, worker job, bench curve.

Real bundled hippocampus cases, tiny schedules (a few training steps per round): these tests check the
mechanics, not the accuracy (the benchmark in README.md does that).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.axis_ensemble import AxisEnsemble
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.engine.plain_unet import PlainUNet2D
from SparseSegLib.engine.postprocess import postprocess_labels
from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.sampling import UNKNOWN
from SparseSegLib.engine.slice_registration import slice_transform, warp_label
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.self_labelling import (
    RETIRED_NAMES,
    erosion_at,
    follow_footprint,
    inner_neighbour,
    labelling_alone,
    next_slices,
    per_side,
    postprocessed_proposal,
    pseudo_labels,
    rounds_needed,
    slice_weights,
)

from self_labelling_support import TINY, new_loop


# --------------------------------------------------------------------------------------------------
# The paper's pieces


def test_plain_unet_has_the_papers_parameter_count():
    # Table 4 of the paper: 485,673 parameters for BRAIN_2 (one input, one sigmoid output)
    assert sum(p.numel() for p in PlainUNet2D(1, 1).parameters()) == 485_673
    assert PlainUNet2D(3, 3)(torch.zeros(2, 3, 64, 48)).shape == (2, 3, 64, 48)


def test_threshold_readings_differ():
    # background, unsure foreground, confident anterior, confident posterior, unsure between classes
    p = np.array([[0.9, 0.35, 0.1, 0.05, 0.2],
                  [0.05, 0.6, 0.8, 0.15, 0.45],
                  [0.05, 0.05, 0.1, 0.8, 0.35]])[:, None]
    binarised = pseudo_labels(p, 0.7, "binarise")[0]
    ignored = pseudo_labels(p, 0.7, "ignore")[0]
    assert binarised.tolist() == [0, 0, 1, 2, 1]  # P(fg) < theta -> background; every pixel labelled
    assert ignored.tolist() == [0, UNKNOWN, 1, 2, UNKNOWN]  # unsure pixels left out of the loss
    strict_background = pseudo_labels(p, 0.7, "ignore", background_theta=0.95)[0]
    assert strict_background.tolist() == [UNKNOWN, UNKNOWN, 1, 2, UNKNOWN]  # background needs 0.95 now
    assert (binarised != ignored).any()


def test_registered_neighbour_label_follows_a_drifting_structure(sample_case):
    # real MRI slices: carry the central slice's label outwards by registration, compare with the truth
    image, label = normalize(sample_case.image, "zscore-slice"), sample_case.label
    centre = image.shape[0] // 2
    registered, copied = label[centre], label[centre]
    for s in range(centre + 1, centre + 5):
        registered = warp_label(registered, slice_transform(image[s], image[s - 1]))
        truth = label[s] > 0
        dice = lambda guess: 2 * (guess & truth).sum() / (guess.sum() + truth.sum())
        assert dice(registered > 0) > dice(copied > 0)  # identity copying loses the structure as it moves
    assert dice(registered > 0) > 0.7  # four slices out (measured 0.82 on hippocampus_001)


def test_continuity_lowers_the_foreground_threshold_inside_the_footprint_only():
    # P(fg) per pixel: inside the footprint 0.4 (kept), 0.2 (network sure it ended); outside 0.4 (not kept)
    p = np.array([[0.6, 0.8, 0.6], [0.4, 0.2, 0.4]])[:, None]
    proposal = pseudo_labels(p, 0.7, "ignore")[0]
    assert proposal.tolist() == [UNKNOWN, 0, UNKNOWN]
    footprint = np.array([[1, 1, 0]])
    assert follow_footprint(proposal[None], p, footprint, 0.3)[0].tolist() == [1, 0, UNKNOWN]
    # seeded (hysteresis): a carried region is kept only where it touches the network's own confident foreground
    p = np.array([[0.6, 0.6, 0.2, 0.9, 0.6, 0.6], [0.4, 0.4, 0.8, 0.1, 0.4, 0.4]])[:, None]
    proposal = pseudo_labels(p, 0.7, "ignore")
    footprint = np.array([[1, 1, 0, 0, 1, 1]])
    assert follow_footprint(proposal, p, footprint, 0.3)[0].tolist() == [1, 1, 1, 0, 1, 1]
    assert follow_footprint(proposal, p, footprint, 0.3, seeded=True)[0].tolist() == [1, 1, 1, 0, UNKNOWN, UNKNOWN]
    assert inner_neighbour(np.array([0, 0, 1, 0, 0], bool), 4) == 3 and inner_neighbour(np.array([0, 0, 1, 0, 0], bool), 0) == 1


def test_eroded_continuity_footprint_shrinks_the_carried_label(cohort):
    # a carried label keeps its area slice after slice; eroding it lets a chain die out where a structure ends
    loops = {erode: new_loop(cohort[:1], continuity=0.3, continuity_erode=erode) for erode in (0, 2)}
    for loop in loops.values():
        centre = int(np.flatnonzero(loop.gt[0])[0])
        loop.targets[0][centre] = np.where(cohort[0].label[centre] > 0, 1, 0)
    carried, eroded = (loops[e].neighbour_footprint(0, centre + 1) for e in (0, 2))
    assert np.count_nonzero(carried) > np.count_nonzero(eroded) > 0
    assert not np.any((eroded > 0) & (carried == 0))


def test_a_fractional_erosion_rate_shrinks_the_chain_every_few_slices():
    # rate 0.5: one pixel on every second slice out from the ground truth; the chain's total is floor(distance * rate)
    assert [erosion_at(d, 0.5) for d in range(7)] == [0, 0, 1, 0, 1, 0, 1]
    assert [erosion_at(d, 1) for d in range(4)] == [0, 1, 1, 1] and erosion_at(3, 0) == 0
    assert sum(erosion_at(d, 0.3) for d in range(1, 11)) == 3


def test_relabelling_with_post_processing_drops_stray_components_and_fills_holes():
    # P(fg) on a 3 x 7 x 7 volume: a sure cube with an enclosed hole, a stray sure voxel, an unsure band elsewhere
    p_fg = np.zeros((3, 7, 7))
    p_fg[:, 1:4, 1:4] = 0.9
    p_fg[1, 2, 2] = 0.1   # hole inside the cube
    p_fg[1, 6, 6] = 0.9   # a stray component
    p_fg[1, 5, 0:3] = 0.5  # unsure: left out of the loss
    probabilities = np.stack([1 - p_fg, p_fg])
    proposal = pseudo_labels(probabilities, 0.7, "ignore")
    cleaned = postprocessed_proposal(proposal, probabilities, "lcc-fill")
    assert proposal[1, 6, 6] == 1 and cleaned[1, 6, 6] == 0
    assert proposal[1, 2, 2] == 0 and cleaned[1, 2, 2] == 1
    assert (cleaned[1, 5, 0:3] == UNKNOWN).all() and (cleaned[:, 1:4, 1:4] == 1).all()
    assert postprocessed_proposal(proposal, probabilities, "none") is proposal


def test_round_rule_outward_and_random():
    labelled = np.zeros(36, bool)
    labelled[18] = True
    assert per_side(36, 0.05) == 1 and per_side(36, 0.10) == 2 and per_side(10, 0.05) == 1
    assert next_slices(labelled, 1, "outward", np.random.default_rng(0)).tolist() == [17, 19]
    assert next_slices(labelled, 2, "outward", np.random.default_rng(0)).tolist() == [16, 17, 19, 20]
    random = next_slices(labelled, 1, "random", np.random.default_rng(0))
    assert random.size == 2 and 18 not in random
    assert rounds_needed(labelled, 1, "outward") == 18 and rounds_needed(labelled, 1, "random") == 18
    weights = slice_weights(36, labelled, "gaussian")
    assert weights[18] == 1 and weights[0] < weights[10] < weights[17] < 1
    assert slice_weights(36, labelled, "stepwise")[0] == 0.25 and slice_weights(36, labelled, "uniform").min() == 1
    narrow = slice_weights(36, labelled, "gaussian", sigma=0.1)
    assert narrow[18] == 1 and (narrow[:18] < weights[:18]).all()


def test_unknown_or_bad_options_are_clear_errors(cohort):
    with pytest.raises(SparseSegError, match="does not know"):
        get_method("self-labelling").settings(MethodOptions(extra={"thetta": 0.7}))
    with pytest.raises(SparseSegError, match="threshold"):
        get_method("self-labelling").settings(MethodOptions(extra={"threshold": "maybe"}))
    faithful = get_method("self-labelling-faithful").settings(MethodOptions())
    assert (faithful.classes, faithful.threshold, faithful.refresh, faithful.optimizer) == ("merged", "binarise", False, "rmsprop")


@pytest.mark.parametrize("old_name", sorted(RETIRED_NAMES))
def test_a_retired_method_name_is_reproduced_by_options_of_a_registered_one(old_name):
    # v1-v6 and the ablations were method names; each is now a registered method plus options that must resolve to
    # exactly the settings its preset gave, whatever the budget and whatever else the user sets
    from SparseSegLib.cli import parse_options
    from SparseSegLib.methods import METHODS
    from SparseSegLib.methods.self_labelling import option_lines, resolve_settings
    from SparseSegLib.methods.self_labelling.presets import RETIRED_PRESETS

    method, options = RETIRED_NAMES[old_name]
    assert old_name not in METHODS and method in METHODS
    for budget in ("quick", "paper"):
        for user in ({}, {"theta": 0.65, "epoch_iterations": 5}, {"solo_theta": 0.8}):
            old = resolve_settings(RETIRED_PRESETS[old_name], MethodOptions(budget=budget, extra=user))
            assert get_method(method).settings(MethodOptions(budget=budget, extra={**options, **user})) == old
    # the command line reads the options back as written, and the results document lists exactly them
    assert parse_options(option_lines(old_name).replace("--option ", "").split()) == options
    document = (Path(__file__).resolve().parents[1] / "docs" / "results" / "self-labelling.md").read_text()
    assert f"| `{old_name}` | `{method}` | `{option_lines(old_name)}` |" in document


def test_postprocess_keeps_the_largest_component_and_fills_holes():
    labels = np.zeros((9, 9, 9), np.uint8)
    labels[1:6, 1:6, 1:6] = 1
    labels[3, 3, 3] = 0  # a hole
    labels[8, 8, 8] = 2  # a stray voxel
    probabilities = np.zeros((3,) + labels.shape, np.float32)
    probabilities[1] = 1.0
    result = postprocess_labels(labels, probabilities, "lcc-fill")
    assert result[8, 8, 8] == 0 and result[3, 3, 3] == 1 and result.sum() == 125
    assert postprocess_labels(labels, probabilities, "none") is labels


# --------------------------------------------------------------------------------------------------
# The rounds on real cases


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


# --------------------------------------------------------------------------------------------------
# Worker job and benchmark


class LogRecorder(SilentReporter):
    """Keeps what a method logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_a_run_that_labels_alone_uses_the_single_network_threshold(cohort):
    method = get_method("self-labelling")
    default = method.settings(MethodOptions())
    assert (default.theta, default.solo_theta) == (0.6, 0.7)  # 0.6 for co-labelled averages, 0.7 for one network
    assert labelling_alone(default).theta == 0.7 == method.job_settings(MethodOptions()).theta
    assert labelling_alone(method.settings(MethodOptions(extra={"theta": 0.65}))).theta == 0.65  # the user's theta holds
    assert labelling_alone(method.settings(MethodOptions(extra={"theta": 0.65, "solo_theta": 0.8}))).theta == 0.8
    with pytest.raises(SparseSegError, match="solo_theta"):
        method.settings(MethodOptions(extra={"solo_theta": 0.3}))
    reporter = LogRecorder()
    options = MethodOptions(budget="quick", seed=3, device="cpu", rounds=1, extra=TINY)
    list(method.run_rounds(cohort[:1], options, reporter))  # a worker job: one run, nothing labels with it
    assert any("theta 0.7" in line and "alone" in line for line in reporter.lines)


def test_longer_epochs_scale_the_budgets_schedule_but_not_the_fusion_networks_training():
    method = get_method("self-labelling")
    paper = method.settings(MethodOptions(budget="paper"))
    # the labelling network trains three times as long per epoch; the fusion networks get a third of the epochs
    assert (paper.epoch_scale, paper.epoch_iterations, paper.fusion_epochs) == (3, 60, 7)
    assert (paper.first_epochs, paper.round_epochs, paper.patience) == (8, 2, 2)  # epochs count as before
    budget = method.settings(MethodOptions(budget="paper", extra={"epoch_scale": 1}))
    assert (budget.epoch_iterations, budget.fusion_epochs) == (20, 20)
    quick = method.settings(MethodOptions(budget="quick"))
    assert (quick.epoch_iterations, quick.fusion_epochs) == (30, 3)
    given = method.settings(MethodOptions(budget="paper", extra={"epoch_iterations": 25}))
    assert (given.epoch_iterations, given.fusion_epochs) == (25, 20)  # what the user sets is not scaled
    assert get_method("self-labelling-faithful").settings(MethodOptions(budget="paper")).epoch_iterations == 20
    with pytest.raises(SparseSegError, match="epoch_scale"):
        method.settings(MethodOptions(extra={"epoch_scale": 0}))


def test_worker_job_streams_rounds(sample_dataset, tmp_path):
    from SparseSegLib.jobs import layout
    from SparseSegLib.jobs.client import Job
    from SparseSegLib.jobs.events import read_events
    from SparseSegLib.worker import run_job

    case = sample_dataset.load(sample_dataset.cases[1])
    painted = np.zeros_like(case.label)
    centre = case.image.shape[0] // 2
    painted[centre] = case.label[centre]
    job = Job.create(tmp_path / "job", case.image, case.geometry, painted, "self-labelling-faithful", reference=case.label,
                     classes={1: "Anterior", 2: "Posterior"}, device="cpu",
                     parameters={"rounds": 3, "iterations_per_round": 4, "batch_size": 4, "threads": 1,
                                 "method_options": {"theta": 0.6}})
    code = run_job(job.directory, install_signals=False)
    assert code == layout.EXIT_FINISHED
    events = read_events(job.directory / layout.EVENTS_FILE)
    rounds = [e for e in events if e.get("event") == "round"]
    assert [e["round"] for e in rounds] == [1, 2, 3]
    record = json.loads((layout.round_dir(job.directory, 3) / layout.ROUND_FILE).read_text())
    assert record["training"]["labelled_slices"] == 5 and record["training"]["new_slices"] == 2
    # scored against the reference each round, on exactly the label the round streamed
    from SparseSegLib.metrics import mask_dice

    streamed = job.load_round(3, probabilities=False).label
    assert record["metrics"]["merged"]["dice"] == pytest.approx(mask_dice(streamed > 0, case.label > 0), abs=1e-6)


@pytest.mark.parametrize("painted_axis", [0, 2])
def test_a_self_labelling_job_saves_as_a_model_that_predicts_what_the_job_streamed(sample_dataset, tmp_path, painted_axis):
    # Slicer's "Save model": the job's networks (labelling network + fusion members, trained on the volume transposed
    # to the painted axis) become a model folder on the volume's own axes that `predict` and "Apply model" read
    from SparseSegLib.io import read_image
    from SparseSegLib.jobs import layout
    from SparseSegLib.jobs.client import Job
    from SparseSegLib.worker.model_export import export_model
    from SparseSegLib.worker import run_job

    case = sample_dataset.load(sample_dataset.cases[1])
    painted = np.zeros_like(case.label)
    centre = case.image.shape[painted_axis] // 2
    index = [slice(None)] * 3
    index[painted_axis] = centre
    painted[tuple(index)] = case.label[tuple(index)]
    # k = 1: round 2 labels every slice, round 3 fuses the three axes
    job = Job.create(tmp_path / "job", case.image, case.geometry, painted, "self-labelling", classes={1: "Anterior", 2: "Posterior"},
                     device="cpu", parameters={"rounds": 3, "iterations_per_round": 4, "batch_size": 4, "threads": 1,
                                               "save_probabilities": True, "method_options": {"k": 1.0, "fusion_passes": 1}})
    assert run_job(job.directory, install_signals=False) == layout.EXIT_FINISHED
    model = load_segmenter(export_model(job.directory, tmp_path / "model"))
    assert isinstance(model.network, AxisEnsemble) and sorted(model.network_config.axes) == [0, 1, 2]
    assert model.network_config.axes[0] == painted_axis  # the labelling network runs across the painted axis
    _, probabilities = model.predict(read_image(job.directory / "inputs" / "image.nrrd")[0])
    # (probabilities, not labels: four training steps leave near-ties that float rounding may tip either way)
    for value in (1, 2):
        streamed = read_image(layout.round_dir(job.directory, 3) / f"probability-{value}.nrrd")[0]
        assert np.allclose(probabilities[value], streamed, atol=1e-4)


def test_bench_writes_round_curve_and_paper_rows(sample_dir, tmp_path):
    from SparseSegLib.bench import BenchConfig, run_benchmark

    class Quiet(SilentReporter):
        pass

    config = BenchConfig(dataset=sample_dir, annotation="central-slice", methods=["self-labelling-faithful"],
                         out=tmp_path / "bench", budget="quick", device="cpu", save_predictions=False)
    import SparseSegLib.methods.self_labelling as module

    saved = dict(module.BUDGET_SETTINGS["quick"])
    module.BUDGET_SETTINGS["quick"].update({"epoch_iterations": 3, "first_epochs": 2, "round_epochs": 1, "patience": 1})
    try:
        results = run_benchmark(config, Quiet())
    finally:
        module.BUDGET_SETTINGS["quick"].update(saved)
    curve = results["runs"]["self-labelling-faithful (2D)"]["folds"][0]["round_curve"]
    assert len(curve["points"]) >= 10 and curve["points"][-1]["labelled_fraction"] == 1.0
    assert all(0 <= p["dice"] <= 1 for p in curve["points"])
    # the last round's weights are the model the bench scored: the curve's end is the run's test Dice
    merged = results["runs"]["self-labelling-faithful (2D)"]["summary"]["merged"]["dice"]["mean"]
    assert curve["points"][-1]["dice"] == pytest.approx(merged, abs=1e-6)
    assert (tmp_path / "bench" / "round_dice.png").stat().st_size > 1000
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "| 2D self-labelling | self-labelling-faithful (2D) | 0.615" in report
    assert "Test Dice after each round" in report
    # parallel parts of one benchmark combine into one report; another split is refused
    from SparseSegLib.round_curves import combine_results

    other = json.loads((tmp_path / "bench" / "results.json").read_text())
    other["runs"] = {"self-labelling (2D)": other["runs"]["self-labelling-faithful (2D)"]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    combined = combine_results([tmp_path / "bench" / "results.json", tmp_path / "other.json"], tmp_path / "combined", 12.0)
    assert set(combined["runs"]) == {"self-labelling-faithful (2D)", "self-labelling (2D)"}
    assert "Combined from" in (tmp_path / "combined" / "report.md").read_text()
    other["folds"][0]["test"] = other["folds"][0]["test"][:1]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SparseSegError, match="another split"):
        combine_results([tmp_path / "bench" / "results.json", tmp_path / "other.json"], tmp_path / "combined")


def test_job_painted_across_another_axis_expands_along_that_axis(sample_dataset):
    case = annotate_case(sample_dataset.load(sample_dataset.cases[2]), "central-slice:2", 0)
    options = MethodOptions(budget="quick", seed=0, device="cpu", rounds=2, extra=TINY)
    results = list(get_method("self-labelling-faithful").run_rounds([case], options, SilentReporter()))
    assert [r.index for r in results] == [1, 2]
    last = results[-1]
    assert last.metrics["slice_axis"] == 2 and last.metrics["slices"] == case.image.shape[2]
    assert last.metrics["labelled_slices"] == 3  # the painted slice and one on each side, along axis 2
    assert last.labels[case.case_id].shape == case.image.shape
    assert last.probabilities[case.case_id].shape == (2,) + case.image.shape


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


