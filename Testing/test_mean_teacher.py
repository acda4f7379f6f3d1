"""Mean Teacher / UA-MT (issue 17) on the bundled hippocampus scans: the teacher is exactly the EMA of the student,
UA-MT's entropy threshold (and so its certain region) grows with the ramp, the SimpleITK preprocessing writes
results on the input's grid, and a worker job streams rounds that carry the teacher's uncertainty map.

Networks are tiny (two levels of 4-8 channels) and runs a few iterations long, with one CPU thread.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from SparseSegLib.annotation import annotate_case
from SparseSegLib.case import Case, Geometry
from SparseSegLib.engine.postprocess import object_count
from SparseSegLib.engine.sitk_preprocessing import SitkPreprocessing, bounding_box, write_on_input_grid
from SparseSegLib.errors import SparseSegError
from SparseSegLib.io import read_image, to_sitk
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.events import read_events
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.mean_teacher.data import BatchSource, prepare, semi_supervised_split
from SparseSegLib.methods.mean_teacher.network import build_student, network_config
from SparseSegLib.methods.mean_teacher.schedules import consistency_weight, ema_alpha, uncertainty_threshold
from SparseSegLib.methods.mean_teacher.settings import MeanTeacherSettings
from SparseSegLib.methods.mean_teacher.teacher import certain_mask, monte_carlo
from SparseSegLib.methods.mean_teacher.training import MeanTeacherTrainer

TINY = {"channels": [4, 8], "passes": 2, "uncertainty_passes": 2}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cases(sample_dataset) -> list[Case]:
    """Three sample scans, each annotated on its central slice (the sparse setting)."""
    return [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:3]]


def tiny_trainer(cases: list[Case], uncertainty_aware: bool, iterations: int = 6, **options):
    settings = MeanTeacherSettings.parse({**TINY, **options})
    torch.manual_seed(0)
    volumes = [prepare(case, settings, "zscore") for case in cases]
    student = build_student(network_config(settings.channels, 0), 3, settings.dropout)
    trainer = MeanTeacherTrainer(student, settings, iterations, 3, uncertainty_aware, torch.device("cpu"))
    return trainer, BatchSource(volumes, (32, 48, 32), settings, seed=0)


def test_teacher_is_the_ema_of_the_student(cases):
    """After every step: teacher = alpha_k teacher + (1 - alpha_k) student, alpha_k = min(1 - 1/(k + 1), 0.99);
    step 0 copies the student. The expected average is recomputed in float64 from the student's weights."""
    trainer, source = tiny_trainer(cases, uncertainty_aware=False, ema_decay=0.6)
    expected = None
    for step in range(6):
        trainer.train_step(*source.sample())
        student = [p.detach().double().clone() for p in trainer.student.parameters()]
        alpha = ema_alpha(step, 0.6)
        expected = student if expected is None else [alpha * e + (1 - alpha) * s for e, s in zip(expected, student)]
        teacher = [p.detach().double() for p in trainer.teacher.module.parameters()]
        if step == 0:
            assert all(torch.equal(t, s) for t, s in zip(teacher, student)), "update 0 must copy the student"
        for t, e in zip(teacher, expected):
            torch.testing.assert_close(t, e, rtol=0, atol=1e-6)
    assert [ema_alpha(k, 0.6) for k in range(4)] == [0.0, 0.5, 0.6, 0.6]
    # the teacher lags: it differs from the student once they have diverged, and no gradient reaches it
    assert any(not torch.allclose(t, s) for t, s in zip(trainer.teacher.module.parameters(), trainer.student.parameters()))
    assert all(p.grad is None for p in trainer.teacher.parameters())


def test_uncertainty_threshold_rises_with_the_ramp(cases):
    """The threshold goes from 0.75 ln C to ln C without falling, the certain region of one teacher output only
    grows with it, and a UA-MT run records rising thresholds; the consistency weight ramps the same way."""
    iterations = 40
    thresholds = [uncertainty_threshold(step, iterations, 3) for step in range(iterations + 1)]
    assert thresholds[0] == pytest.approx(0.75 * math.log(3) + 0.25 * math.log(3) * math.exp(-5))
    assert thresholds[-1] == pytest.approx(math.log(3))
    assert all(b >= a for a, b in zip(thresholds, thresholds[1:])) and thresholds[-1] > thresholds[0]
    weights = [consistency_weight(step, 6000) for step in range(0, 6001, 150)]
    assert weights[0] == pytest.approx(0.1 * math.exp(-5)) and weights[-1] == pytest.approx(0.1)
    assert all(b >= a for a, b in zip(weights, weights[1:]))

    trainer, source = tiny_trainer(cases, uncertainty_aware=True, iterations=4)
    trainer.run(source, 4, SilentReporter(), "test")
    recorded = [entry["threshold"] for entry in trainer.history]
    assert len(recorded) == 4 and all(b > a for a, b in zip(recorded, recorded[1:]))
    images, _ = source.sample()
    _, entropy = monte_carlo(trainer.teacher, images, passes=3)
    certain = [int(certain_mask(entropy, uncertainty_threshold(step, iterations, 3)).sum()) for step in (0, 20, 40)]
    assert certain[0] <= certain[1] <= certain[2] == entropy.numel()
    assert certain[0] < entropy.numel(), "an untrained teacher is uncertain somewhere at the first threshold"


def test_preprocessing_keeps_the_input_geometry(cases, tmp_path):
    """Crop to the non-zero box, normalise, predict on the crop, write: the file lies on the input's grid (rotated,
    anisotropic, off-origin), the crop's SimpleITK origin is the box corner's, and the values land where they were."""
    sample = cases[0]
    padded = np.pad(sample.image, ((3, 2), (5, 4), (1, 6)))
    angle = np.deg2rad(25.0)
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    geometry = Geometry(size=padded.shape[::-1], spacing=(0.9, 1.1, 2.5), origin=(-40.0, 12.5, 7.0), direction=direction)
    step = SitkPreprocessing(margin=1, percentiles=(1.0, 99.0))
    image, crop = step.image(padded)
    assert crop.start == (2, 4, 0) and crop.size == image.shape
    inside = image[image != 0]
    assert abs(float(inside.mean())) < 0.1 and inside.min() >= np.percentile(inside, 0) and inside.max() < 5
    cropped = crop.crop_image(to_sitk(padded, geometry))
    corner = geometry.ijk_to_lps() @ np.array([crop.start[2], crop.start[1], crop.start[0], 1.0])
    np.testing.assert_allclose(cropped.GetOrigin(), corner[:3], atol=1e-6)
    assert cropped.GetSpacing() == geometry.spacing

    result = (image > 0.5).astype(np.uint8)
    path = write_on_input_grid(result, crop, geometry, tmp_path / "result.nrrd")
    written, written_geometry = read_image(path)
    assert written_geometry.matches(geometry), written_geometry.describe_difference(geometry)
    assert written.shape == padded.shape and np.array_equal(written[crop.slices], result)
    assert not written[:2].any() and not written[..., -5:].any()
    assert bounding_box(np.zeros((4, 4, 4), bool)).size == (4, 4, 4)

    # a trained model predicts through the crop and returns the input's full grid
    case = replace(sample, image=padded, geometry=geometry, label=np.pad(sample.label, ((3, 2), (5, 4), (1, 6))),
                   annotated=np.pad(sample.annotated, ((3, 2), (5, 4), (1, 6))))
    options = MethodOptions(iterations=2, extra={**TINY, "margin": 1})
    segmenter = get_method("mean-teacher").train([case], options, SilentReporter())
    labels, probabilities = segmenter.predict(case.image)
    assert segmenter.normalization == "sitk" and labels.shape == padded.shape
    assert probabilities.shape == (3,) + padded.shape and np.allclose(probabilities[0, :2], 1.0)


def test_semi_supervised_split_keeps_n_volumes(cases):
    full = [replace(case, annotated=None) for case in cases]
    seen = semi_supervised_split(full, 2, seed=0)
    assert sum(case.annotated is None for case in seen) == 2
    assert [case.annotated.any() for case in seen if case.annotated is not None] == [False]
    with pytest.raises(SparseSegError, match="labelled=4"):
        semi_supervised_split(full, 4, seed=0)
    with pytest.raises(SparseSegError, match="unknown option"):
        get_method("ua-mt").check_options(MethodOptions(extra={"thresold": 0.5}))


@pytest.mark.parametrize("dims", [3, 2])
def test_worker_job_streams_rounds_with_uncertainty(cases, tmp_path, dims):
    """A ua-mt job on one scan (its central slice painted), with the 3D network and the 2D form: two rounds, each
    with a label map and the teacher's uncertainty map on the input grid, in [0, 1] and not constant; round records
    carry threshold and weight."""
    case = cases[0]
    painted = np.where(case.annotated, case.label, 0)
    job = Job.create(tmp_path / "job", case.image, case.geometry, painted, "ua-mt", reference=case.label,
                     classes={1: "Anterior", 2: "Posterior"}, device="cpu",
                     parameters={"rounds": 2, "iterations_per_round": 3, "save_uncertainty": True, "threads": 1,
                                 "method_options": {**TINY, "dims": dims}})
    from SparseSegLib.worker import run_job

    assert run_job(job.directory, install_signals=False) == layout.EXIT_FINISHED
    events = read_events(job.directory / layout.EVENTS_FILE)
    rounds = [event for event in events if event.get("event") == "round"]
    assert [event["round"] for event in rounds] == [1, 2]
    thresholds = []
    for index in (1, 2):
        folder = layout.round_dir(job.directory, index)
        uncertainty, geometry = read_image(folder / layout.UNCERTAINTY_FILE)
        assert geometry.matches(case.geometry) and uncertainty.shape == case.image.shape
        assert 0.0 <= uncertainty.min() < uncertainty.max() <= 1.0
        record = json.loads((folder / layout.ROUND_FILE).read_text())
        assert "uncertainty" in record["files"]
        assert record["training"]["iterations_total"] == 3 * index
        thresholds.append(record["training"]["threshold"])
    assert 0 < thresholds[0] < thresholds[1] <= math.log(3), "the threshold ramps over the job's rounds"
    # Save model then Apply (the module's Save / Apply): the student of the newest round as a model folder
    from SparseSegLib.engine.model import load_segmenter
    from SparseSegLib.worker.model_export import export_model

    model = load_segmenter(export_model(job.directory, tmp_path / "model"))
    applied, probabilities = model.predict(case.image)
    streamed, _ = read_image(layout.round_dir(job.directory, 2) / layout.LABEL_FILE)
    assert applied.shape == case.image.shape
    # the job's rounds keep the parts of the student's result that hold painted object; the saved model, meant for
    # other scans with no paint, keeps as many of its largest parts as the last round held
    components, count = ndimage.label(streamed > 0)
    assert count and all((components == part)[painted > 0].any() for part in range(1, count + 1)), \
        "every part of a streamed result holds painted object"
    assert model.postprocess == "lcc" and model.objects == object_count([streamed]) >= 1
    assert ndimage.label(applied > 0)[1] <= model.objects
    anchored = model.labels(probabilities, anchor=painted > 0)
    assert (anchored == streamed).mean() > 0.99, "the saved model, anchored at the paint, segments the scan as the job did"


def test_two_dimensional_form_trains_on_slices_and_saves_a_plain_model(cases, tmp_path):
    """``dims=2``: batches are one-slice patches without the slice axis (the labelled ones from the painted slice,
    fully known, when the window fits in it), the student is a 2D U-Net across axis 0, its saved model predicts the scan as the trained one, and
    the teacher's uncertainty map covers the input grid slice by slice."""
    settings = MeanTeacherSettings.parse({**TINY, "dims": 2})
    volumes = [prepare(case, settings, "zscore") for case in cases]
    images, targets = BatchSource(volumes, (48, 32), settings, seed=0).sample()
    assert images.shape == (4, 1, 48, 32) and targets.shape == (4, 48, 32)
    assert (targets[:2] >= 0).all() and (targets[2:] < 0).any(), "whole painted slices first, then other slices"

    options = MethodOptions(iterations=3, extra={**TINY, "dims": 2})
    segmenter = get_method("ua-mt").train(cases, options, SilentReporter())
    assert segmenter.network_config.dims == 2 and len(segmenter.patch_size) == 2
    labels, probabilities = segmenter.predict(cases[0].image)
    assert labels.shape == cases[0].image.shape and probabilities.shape == (3,) + cases[0].image.shape
    from SparseSegLib.engine.model import load_segmenter

    loaded = load_segmenter(segmenter.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict(cases[0].image)[1], probabilities, atol=1e-5)

    from SparseSegLib.methods.mean_teacher.predict import teacher_uncertainty
    from SparseSegLib.methods.mean_teacher.teacher import make_teacher

    uncertainty = teacher_uncertainty(make_teacher(segmenter.network), segmenter, cases[0].image, 2, 0.1,
                                      torch.device("cpu"))
    assert uncertainty.shape == cases[0].image.shape and 0.0 <= uncertainty.min() < uncertainty.max() <= 1.0
    with pytest.raises(SparseSegError, match="dims"):
        MeanTeacherSettings.parse({"dims": 1})
