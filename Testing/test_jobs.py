"""The torch-free client side of the job protocol, without a worker process: the annotated regions of a painted
label map, job creation from arrays and files, outcomes of crashed workers, the round bookkeeping and the I/O
benchmark. job.json is checked in test_job_schema.py, events and atomic writes in test_job_files.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from SparseSegLib.case import Geometry
from SparseSegLib.errors import SparseSegError
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.client import Job, JobOutcome
from SparseSegLib.jobs.regions import annotated_mask, boxes_mask, slices_mask
from SparseSegLib.jobs.schema import SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]


def painted(label: np.ndarray, slices=(12, 17, 22), axis: int = 0) -> np.ndarray:
    """What a user painting ``slices`` along ``axis`` leaves: the label on those slices, 0 elsewhere."""
    result = np.zeros_like(label)
    index = [slice(None)] * 3
    index[axis] = list(slices)
    result[tuple(index)] = label[tuple(index)]
    return result


# --------------------------------------------------------------------------------------------------
# annotated regions


def test_slices_region_finds_the_painted_axis(sample_label):
    for axis in (0, 1, 2):
        paint = painted(sample_label, slices=(15, 18), axis=axis)
        mask, chosen, slices = slices_mask(paint, "auto")
        assert chosen == axis and slices == [15, 18]
        expected = np.zeros(paint.shape, bool)
        index = [slice(None)] * 3
        index[axis] = [15, 18]
        expected[tuple(index)] = True
        assert np.array_equal(mask, expected)
    mask, chosen, slices = slices_mask(painted(sample_label, (15, 18), axis=0), 1)
    assert chosen == 1 and len(slices) > 2  # forced along another axis: every j-slice touched by paint
    with pytest.raises(SparseSegError, match="no painted voxel"):
        slices_mask(np.zeros((4, 5, 6), np.uint8))


def test_ijk_boxes_are_inclusive_and_clipped():
    geometry = Geometry(size=(10, 8, 6))  # i, j, k -> arrays (6, 8, 10)
    mask = boxes_mask([{"ijk": [[2, 1, 0], [4, 3, 1]]}, {"ijk": [[8, 6, 4], [20, 20, 20]]}], geometry)
    assert mask.shape == (6, 8, 10)
    assert mask[0:2, 1:4, 2:5].all() and mask[4:6, 6:8, 8:10].all()
    assert mask.sum() == 3 * 3 * 2 + 2 * 2 * 2
    with pytest.raises(SparseSegError, match="ROI box 1 .* holds no voxel"):
        boxes_mask([{"ijk": [[20, 0, 0], [30, 5, 5]]}], geometry)


def test_ras_boxes_match_the_same_box_in_voxels(sample_case, rotated_geometry):
    for geometry in (sample_case.geometry, rotated_geometry):
        corners_ijk = np.array([[1, 2, 1], [4, 4, 3]])
        by_voxel = boxes_mask([{"ijk": corners_ijk.tolist()}], geometry)
        if geometry is sample_case.geometry:  # axis-aligned (flipped) grid: the RAS box of the corners is exact
            ras = (geometry.ijk_to_ras() @ np.c_[corners_ijk, np.ones(2)].T).T[:, :3]
            by_ras = boxes_mask([{"ras": ras.tolist()}], geometry)
            assert np.array_equal(by_ras, by_voxel)
        else:  # rotated grid: an axis-aligned RAS box holds exactly the voxels whose centres lie in it
            matrix = geometry.ijk_to_ras()
            ras = (matrix @ np.c_[corners_ijk, np.ones(2)].T).T[:, :3]
            by_ras = boxes_mask([{"ras": ras.tolist()}], geometry)
            k, j, i = np.nonzero(by_ras)
            centres = (matrix @ np.stack([i, j, k, np.ones_like(i)]))[:3].T
            low, high = ras.min(axis=0), ras.max(axis=0)
            assert by_ras.any() and np.all((centres >= low - 1e-6) & (centres <= high + 1e-6))
            kk, jj, ii = np.indices(geometry.shape)
            every = (matrix @ np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)]))[:3].T
            inside = np.all((every >= low - 1e-6) & (every <= high + 1e-6), axis=1).reshape(geometry.shape)
            assert np.array_equal(inside, by_ras)


def test_annotated_mask_kinds(sample_case):
    paint = painted(sample_case.label)
    mask, text = annotated_mask({"kind": "slices", "axis": "auto"}, paint, sample_case.geometry)
    assert "3 painted slice(s) along axis 0 (k): 12, 17, 22" in text and mask[[12, 17, 22]].all()
    mask, text = annotated_mask({"kind": "full"}, paint, sample_case.geometry)
    assert mask.all()
    explicit = np.zeros(sample_case.image.shape, np.uint8)
    explicit[3] = 5
    mask, _ = annotated_mask({"kind": "mask"}, paint, sample_case.geometry, explicit)
    assert mask.sum() == explicit[3].size


# --------------------------------------------------------------------------------------------------
# client without torch


def test_client_does_not_import_torch(tmp_path):
    """The GUI process imports the client; it must not pull in torch, MONAI or the engine."""
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from SparseSegLib.case import Geometry
        from SparseSegLib.jobs.client import Job
        geometry = Geometry(size=(8, 8, 4))
        label = np.zeros(geometry.shape, np.uint8); label[2, 3:5, 3:5] = 1
        job = Job.create({str(tmp_path / 'job')!r}, np.ones(geometry.shape, np.float32), geometry, label, "sparse-only")
        job.poll(); job.outcome()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai") or m.startswith("SparseSegLib.engine")
                       or m.startswith("SparseSegLib.methods"))
        assert not heavy, heavy
        print("clean")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout


def test_create_job_from_arrays_writes_valid_inputs(tmp_path, sample_case):
    from SparseSegLib.io import read_image, read_label

    job = Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, painted(sample_case.label), "sparse-only",
                     reference=sample_case.label, classes={1: "Anterior", 2: {"name": "Posterior", "color": [0, 0, 1]}},
                     parameters={"rounds": 2})
    spec = job.spec
    assert spec.rounds == 2 and spec.reference is not None and spec.class_names() == {1: "Anterior", 2: "Posterior"}
    image, geometry = read_image(spec.image)
    assert geometry.matches(sample_case.geometry) and np.array_equal(image, sample_case.image)
    assert np.array_equal(read_label(spec.annotation, geometry), painted(sample_case.label))
    with pytest.raises(SparseSegError, match="already holds a job"):
        Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, painted(sample_case.label), "sparse-only")
    with pytest.raises(SparseSegError, match="no painted voxel"):
        Job.create(tmp_path / "empty", sample_case.image, sample_case.geometry, np.zeros_like(sample_case.label), "sparse-only")
    assert not (tmp_path / "empty" / "job.json").exists()
    with pytest.raises(SparseSegError, match="annotation array has shape"):
        Job.create(tmp_path / "bad", sample_case.image, sample_case.geometry, sample_case.label[1:], "sparse-only")


def test_create_job_from_files_checks_paths(tmp_path, sample_dir):
    image = sample_dir / "imagesTr" / "hippocampus_001.nii.gz"
    job = Job.create_from_files(tmp_path / "job", image, sample_dir / "labelsTr" / "hippocampus_001.nii.gz", "full",
                                region={"kind": "full"})
    assert job.spec.image == image.resolve() and job.spec.case_id == "hippocampus_001"
    with pytest.raises(SparseSegError, match="annotation file not found"):
        Job.create_from_files(tmp_path / "other", image, tmp_path / "missing.nrrd", "sparse-only")


def test_crashed_worker_is_reported_with_exit_code_and_output(tmp_path, sample_case):
    """A worker that dies without an error event (here: a 'python' that fails at start) is a crash with
    its exit code and the last line of its output."""
    job = Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, painted(sample_case.label), "sparse-only")
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ImportError: no module named torch' >&2\nexit 7\n")
    fake.chmod(0o755)
    job.start(python=fake)
    outcome = job.wait(timeout=30)
    assert outcome.status == "crashed" and outcome.exit_code == 7 and outcome.last_error is None
    assert "exit code 7" in outcome.message and "no module named torch" in outcome.message
    with pytest.raises(SparseSegError, match="cannot start the worker"):
        job.start(python=tmp_path / "no-such-python")


def test_outcome_messages():
    killed = JobOutcome("crashed", -9, [1, 2])
    assert "killed by signal SIGKILL" in killed.message
    failed = JobOutcome("error", 2, [], last_error={"message": "out of GPU memory", "hint": "Use the CPU."})
    assert "exit code 2" in failed.message and "out of GPU memory. Use the CPU." in failed.message


def test_layout_round_bookkeeping(tmp_path):
    for index in (1, 2, 4):
        layout.round_dir(tmp_path, index).mkdir(parents=True)
        (layout.round_dir(tmp_path, index) / layout.ROUND_FILE).write_text("{}")
    layout.round_dir(tmp_path, 5).mkdir()
    assert layout.complete_rounds(tmp_path) == [1, 2, 4]
    assert layout.last_complete_round(tmp_path) == 2
    assert list(layout.round_folders(tmp_path)) == [1, 2, 4, 5]
    assert os.path.basename(layout.checkpoint_path(tmp_path, 3)) == "round-003.pt"
    assert SCHEMA_VERSION == 1


# --------------------------------------------------------------------------------------------------
# the I/O benchmark command (its figures are measured by running it, not here)


def test_worker_io_benchmark_runs_end_to_end_on_a_small_volume(capsys):
    """The benchmark writes and reads rounds through the worker's and client's own code; a tiny run
    checks it still works (it asserts that the label map it reads back is the one it wrote)."""
    from SparseSegLib.benchmarks import worker_io

    assert worker_io.main(["--size", "24", "--events", "50", "--repeat", "1"]) == 0
    printed = capsys.readouterr().out
    for row in ("write round (label map only)", "load round (label + probabilities + uncertainty)",
                "drain all 50 events", "poll, one new event"):
        assert row in printed
