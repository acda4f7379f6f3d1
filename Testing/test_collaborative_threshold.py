"""``prediction_threshold``: the final networks' object threshold, stored with the model, on the real sample scans."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.engine.postprocess import object_labels, postprocess_labels
from SparseSegLib.dataset import load_dataset
from SparseSegLib.errors import SparseSegError
from SparseSegLib.metrics import case_metrics
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.collaborative.settings import CollaborativeSettings

TINY = dict(registration="demons", demons_iterations=5, final_iterations=4, fusion="intersection")


def test_object_labels_ask_the_object_classes_together_to_exceed_the_threshold():
    probabilities = np.array([[0.2, 0.35, 0.45, 0.6],   # background
                              [0.5, 0.45, 0.30, 0.3],   # class 1
                              [0.3, 0.20, 0.25, 0.1]])  # class 2
    np.testing.assert_array_equal(object_labels(probabilities, 0.0), [1, 1, 0, 0])  # the argmax
    np.testing.assert_array_equal(object_labels(probabilities, 0.5), [1, 1, 0, 0])
    np.testing.assert_array_equal(object_labels(probabilities, 0.7), [1, 0, 0, 0])  # object 0.8 / 0.65 / 0.55
    with pytest.raises(SparseSegError, match="prediction_threshold"):
        CollaborativeSettings.parse({"prediction_threshold": 1.0})


def test_a_cohort_model_applies_its_threshold_before_postprocessing_and_keeps_it_when_saved(sample_dataset, tmp_path):
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=4, batch_size=2,
                            extra=dict(TINY, prediction_threshold=0.8, postprocess="lcc"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    assert segmenter.object_threshold == 0.8
    labels, probabilities = segmenter.predict(cases[0].image)
    # the default's class_parts (a multi-class cohort) apply after the largest component, in the same step
    np.testing.assert_array_equal(labels, postprocess_labels(object_labels(probabilities, 0.8), probabilities, "lcc",
                                                             segmenter.objects, None, segmenter.class_parts))
    assert (labels > 0).sum() <= (postprocess_labels(probabilities.argmax(0).astype(np.uint8), probabilities,
                                                     "lcc") > 0).sum()
    loaded = load_segmenter(segmenter.save(tmp_path / "model"))
    assert loaded.object_threshold == 0.8 and loaded.postprocess == "lcc"
    np.testing.assert_array_equal(loaded.predict(cases[0].image)[0], labels)


def test_a_jobs_final_round_gives_the_labels_its_saved_model_gives(sample_case):
    case = annotate_case(sample_case, "central-slice", 0)
    method = get_method("collaborative")
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2,
                            extra=dict(TINY, prediction_threshold=0.7, final_axes="0"))
    results = list(method.run_rounds([case], options, SilentReporter()))
    final = results[-1]
    segmenter = method.segmenter_from_state([case], options, final.state)
    assert segmenter.object_threshold == 0.7
    expected = postprocess_labels(object_labels(final.probabilities[case.case_id], 0.7),
                                  final.probabilities[case.case_id], segmenter.postprocess)
    expected[case.annotated] = case.label[case.annotated]
    np.testing.assert_array_equal(final.labels[case.case_id], expected)


def test_the_threshold_sweep_trains_once_and_scores_each_threshold_as_the_model_would(sample_dir, tmp_path, capsys):
    from SparseSegLib.benchmarks.collaborative_threshold import main

    argv = ["--dataset", str(sample_dir), "--split", "0.4,0.3,0.3", "--iterations", "4", "--thresholds", "0.5,0.9,auto",
            "--out", str(tmp_path)] + [f"--option={key}={value}" for key, value in TINY.items()]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "thresholds.json").read_text())
    assert {"0.5", "0.9"} <= set(rows) and len(rows["0.5"]) == len(rows["0.9"]) >= 1
    assert len(rows) in (2, 3)  # auto measured a third threshold, or one of the two
    first = capsys.readouterr().out
    assert "| 0.9 |" in first and "trained collaborative" in first
    model = load_segmenter(tmp_path / "model")
    dataset = load_dataset(sample_dir)
    case = dataset.load(next(r for r in dataset.cases if r.case_id == rows["0.5"][0]["case"]))
    assert model.training["final"]["prediction_threshold"] == model.object_threshold
    scored = case_metrics(model.predict(case.image)[0], case.label, case.geometry.spacing_kji, dataset.class_names)
    # "auto" re-measures the threshold the method measured after training (the default), and scores as the model does
    own = rows[str(model.object_threshold)][0]
    assert own["case"] == case.case_id and own["class_mean"]["dice"] == pytest.approx(scored["mean"]["dice"])
    assert main(argv) == 0  # a second run scores the saved model without training again
    assert "trained" not in capsys.readouterr().out


def test_matched_threshold_finds_where_the_object_count_meets_the_targets_and_never_loosens():
    from SparseSegLib.methods.collaborative.calibration import ThresholdCalibration, matched_threshold

    object_probability = np.linspace(0.0, 0.999, 1000)  # one voxel per 0.001
    probabilities = np.stack([1.0 - object_probability, object_probability])
    calibration = ThresholdCalibration()
    calibration.add(probabilities, (object_probability >= 0.7).astype(np.int16))  # 300 target voxels
    assert calibration.threshold() == pytest.approx(0.7)
    assert calibration.record()["object_ratio_at_0.5"] == pytest.approx(500 / 300, abs=0.01)
    histogram = calibration.histogram
    assert matched_threshold(histogram, 900) == 0.5  # a model that says object too rarely keeps the argmax
    assert matched_threshold(histogram, 0) == 0.95  # the grid's top


def test_auto_measures_the_threshold_on_the_training_volumes_and_a_job_keeps_it_for_its_saved_model(sample_dataset,
                                                                                                     sample_case):
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=4, batch_size=2, extra=dict(TINY, prediction_threshold="auto"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    final = segmenter.training["final"]
    assert 0.5 <= final["prediction_threshold"] <= 0.95 and segmenter.object_threshold == final["prediction_threshold"]
    # the measured threshold brings the object count at least as close to the targets' as the argmax does
    assert abs(final["object_ratio"] - 1) <= abs(final["object_ratio_at_0.5"] - 1)
    case = annotate_case(sample_case, "central-slice", 0)
    job = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2,
                        extra=dict(TINY, prediction_threshold="auto", final_axes="0"))
    method = get_method("collaborative")
    last = list(method.run_rounds([case], job, SilentReporter()))[-1]
    assert last.metrics["prediction_threshold"] == last.state["prediction_threshold"]
    assert method.segmenter_from_state([case], job, last.state).object_threshold == last.state["prediction_threshold"]
    with pytest.raises(SparseSegError, match="prediction_threshold"):
        CollaborativeSettings.parse({"prediction_threshold": "high"})
