"""Continue a job with corrected slices (:mod:`SparseSegLib.jobs.continuation`), as the Slicer module's
Continue and ``sparseseg run JOBDIR --continue --annotation CORRECTED`` do it, on the bundled hippocampus case.

The ground-truth arithmetic is checked on arrays; one real two-stage run (sparse-only, a few iterations,
one thread) checks that the next stage trains on the corrected slice, resumes from the first stage's
checkpoint and leaves the first stage's files as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from SparseSegLib.cli import main
from SparseSegLib.errors import SparseSegError
from SparseSegLib.io import read_label, write_image
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.atomic import sha256_file
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.continuation import (continue_from_annotation, corrected_annotation, default_stage_folder,
                                            whole_slice_axis)
from SparseSegLib.worker import JobLock

TINY = {"rounds": 1, "iterations_per_round": 4, "batch_size": 2, "threads": 1}


def slices_of(label: np.ndarray, slices) -> np.ndarray:
    """A user's paint: the reference on ``slices`` along k, nothing elsewhere."""
    painted = np.zeros_like(label)
    painted[list(slices)] = label[list(slices)]
    return painted


def two_slices(label: np.ndarray) -> tuple[int, int]:
    """The central slice of the object and another slice with plenty of foreground."""
    occupied = np.flatnonzero(label.any(axis=(1, 2)))
    k = int(occupied[len(occupied) // 2])
    c = next(int(s) for s in occupied if abs(int(s) - k) >= 3 and (label[s] > 0).sum() > 20)
    return k, c


def test_a_corrected_map_adds_exactly_the_newly_painted_slices(sample_label):
    k, c = two_slices(sample_label)
    previous = slices_of(sample_label, [k])
    mask = np.zeros(previous.shape, bool)
    mask[k] = True
    correction = corrected_annotation(previous, mask, slices_of(sample_label, [k, c]), job_axis=0)
    assert (correction.axis, correction.slices) == (0, [c])
    assert np.array_equal(correction.label[c], sample_label[c]) and correction.mask[[k, c]].all()
    assert correction.mask.sum() == 2 * mask.sum()
    assert np.array_equal(correction.label[k], sample_label[k])
    assert whole_slice_axis(correction.mask) == 0

    # a re-painted slice replaces its ground truth; an erased one keeps it
    repainted = slices_of(sample_label, [k, c])
    rows = np.flatnonzero(repainted[k].any(axis=1))
    repainted[k, rows[: len(rows) // 2]] = 0  # the user erased part of the object on slice k
    again = corrected_annotation(correction.label, correction.mask, repainted, job_axis=0)
    assert again.slices == [k] and np.array_equal(again.label[k], repainted[k])
    assert corrected_annotation(correction.label, correction.mask, slices_of(sample_label, [c]), job_axis=0).slices == []

    # paint across another axis is refused along the job's axis, and taken when the user names that axis
    across = previous.copy()
    j = int(np.flatnonzero(sample_label.any(axis=(0, 2)))[5])
    across[:, j] = sample_label[:, j]
    with pytest.raises(SparseSegError, match="axis 1"):
        corrected_annotation(previous, mask, across, job_axis=0)
    sideways = corrected_annotation(previous, mask, across, axis=1)
    assert sideways.slices == [j] and sideways.mask[:, j].all() and sideways.mask[k].all()
    assert whole_slice_axis(sideways.mask) is None


def test_default_stage_folder_counts_stages(tmp_path):
    assert default_stage_folder(tmp_path / "job") == (tmp_path / "job-stage-2").resolve()
    assert default_stage_folder(tmp_path / "job-stage-2") == (tmp_path / "job-stage-3").resolve()
    assert default_stage_folder(tmp_path / "stage-1") == (tmp_path / "stage-2").resolve()


@pytest.fixture
def first_stage(sample_case, tmp_path, capsys) -> tuple[Path, int, int]:
    """A finished one-round job on the central slice of the object, run through ``sparseseg run JOBDIR``."""
    k, c = two_slices(sample_case.label)
    job = Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, slices_of(sample_case.label, [k]),
                     "sparse-only", reference=sample_case.label, classes={1: "Anterior", 2: "Posterior"},
                     parameters=TINY, device="cpu")
    assert main(["run", str(job.directory)]) == 0
    capsys.readouterr()
    return job.directory, k, c


@pytest.mark.slow
def test_run_continue_trains_on_the_corrected_slice_from_the_checkpoint(first_stage, sample_case, tmp_path, capsys):
    jobdir, k, c = first_stage
    before = {p: sha256_file(p) for p in sorted(jobdir.rglob("*")) if p.is_file() and p.name != layout.LOCK_FILE
              and p.name not in (layout.EVENTS_FILE, layout.LOG_FILE, layout.OUTPUT_LOG_FILE)}
    corrected = tmp_path / "corrected.nii.gz"
    write_image(slices_of(sample_case.label, [k, c]), sample_case.geometry, corrected)

    code = main(["run", str(jobdir), "--continue", "--annotation", str(corrected), "--rounds", "1"])
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    stage = jobdir.with_name("job-stage-2")
    assert code == 0, err
    assert f"job folder: {stage}" in out
    annotated = read_label(stage / "inputs/annotated.nrrd")
    assert sorted(np.flatnonzero(annotated.any(axis=(1, 2)))) == [min(k, c), max(k, c)]
    assert annotated[[k, c]].all()
    annotation = read_label(stage / "inputs/annotation.nrrd")
    assert np.array_equal(annotation[c], sample_case.label[c]) and np.array_equal(annotation[k], sample_case.label[k])
    spec = json.loads((stage / "job.json").read_text())
    assert spec["parameters"]["rounds"] == 2 and spec["region"]["kind"] == "mask" and spec["method"] == "sparse-only"
    events = [json.loads(line) for line in (stage / "events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "started")["resume_from"] == 1
    assert layout.complete_rounds(stage) == [1, 2]
    assert json.loads((stage / "rounds/002/round.json").read_text())["metrics"] is not None  # the reference came along
    # the first stage is untouched: same files, same bytes, no round 2, its checkpoint still there
    after = {p: sha256_file(p) for p in before if p.is_file()}
    assert after == before
    assert layout.complete_rounds(jobdir) == [1] and layout.checkpoints(jobdir).get(1)


def test_continue_without_new_paint_still_makes_a_stage(first_stage, sample_case, tmp_path):
    """No new slice is not an error (the module's Continue without edits trains on): same ground truth."""
    jobdir, k, _ = first_stage
    same = tmp_path / "same.nrrd"
    write_image(slices_of(sample_case.label, [k]), sample_case.geometry, same)
    job, correction = continue_from_annotation(jobdir, same, tmp_path / "next", more_rounds=3)
    assert correction.slices == []
    assert np.array_equal(read_label(job.directory / "inputs/annotation.nrrd"), slices_of(sample_case.label, [k]))
    assert job.spec.parameters["rounds"] == 4
    assert layout.last_complete_round(job.directory) == 1 and layout.checkpoints(job.directory).get(1)


def test_continue_errors_are_one_line(first_stage, sample_case, tmp_path, capsys):
    jobdir, k, c = first_stage
    corrected = tmp_path / "corrected.nrrd"
    write_image(slices_of(sample_case.label, [k, c]), sample_case.geometry, corrected)

    lock = JobLock(jobdir)  # a worker holds the lock while it runs
    lock.acquire()
    try:
        assert main(["run", str(jobdir), "--continue", "--annotation", str(corrected)]) == 2
    finally:
        lock.release()
    assert "still running" in capsys.readouterr().err

    small = tmp_path / "small.nrrd"
    from SparseSegLib.case import Geometry

    write_image(np.zeros((3, 4, 5), np.uint8), Geometry(size=(5, 4, 3)), small)
    assert main(["run", str(jobdir), "--continue", "--annotation", str(small)]) == 2
    err = capsys.readouterr().err
    assert "not on the image's voxel grid" in err, err

    fresh = Job.create(tmp_path / "fresh", sample_case.image, sample_case.geometry, slices_of(sample_case.label, [k]),
                       "sparse-only", parameters=TINY, device="cpu")
    assert main(["run", str(fresh.directory), "--continue", "--annotation", str(corrected)]) == 2
    assert "no complete round" in capsys.readouterr().err
    assert main(["run", str(jobdir), "--continue", "--annotation", str(corrected), "--method", "gradual"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--method" in lines[0] and "Traceback" not in lines[0]
