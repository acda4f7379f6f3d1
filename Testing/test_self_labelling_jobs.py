"""Incremental 2D self-labelling as a worker job and in the benchmark: the single-network threshold, rounds
streamed to a job folder, a job saved as a model, the round curve and report, a job painted across another axis.

Real bundled hippocampus cases, tiny schedules (a few training steps per round): these tests check the
mechanics, not the accuracy (the benchmark in README.md does that).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.axis_ensemble import AxisEnsemble
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.self_labelling import labelling_alone

from self_labelling_support import TINY


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
