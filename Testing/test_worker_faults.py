"""The failures a worker job can meet, as real processes on the bundled hippocampus case: an unknown method, a full
disk, out of GPU memory (simulated: no GPU here), a bug in the worker; and ``sparseseg run`` from files with ROI boxes.
The runs start together (their timing does not matter)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

from SparseSegLib.io import read_image, write_segmentation
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.events import read_events
from SparseSegLib.metrics import mask_dice

from worker_support import REPO_ROOT, new_job, painted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case(sample_dataset):
    return sample_dataset.load(sample_dataset.cases[0])


def _limit_file_size():
    """In the child: any write past 256 KB fails with EFBIG instead of killing the process (SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory, case, sample_dir):
    """The runs whose timing does not matter start together (two cores): unknown method, disk full,
    simulated out of memory (once / always), an injected bug, and the command line."""
    root = tmp_path_factory.mktemp("faults")
    runs: dict[str, Job] = {}
    quick = {"rounds": 1, "iterations_per_round": 5}
    runs["unknown-method"] = new_job(root / "unknown", case, method="magic-propagation", **quick)
    runs["unknown-method"].start()
    runs["disk-full"] = new_job(root / "disk", case, **quick)
    runs["disk-full"].start(preexec_fn=_limit_file_size)
    # No GPU here: out-of-memory is simulated through the worker's test hook (SPARSESEG_TEST_FAULT),
    # which raises torch.OutOfMemoryError at the first training step(s).
    runs["oom-once"] = new_job(root / "oom-once", case, **quick)
    runs["oom-once"].start(env={"SPARSESEG_TEST_FAULT": "oom-once"})
    runs["oom"] = new_job(root / "oom", case, **quick)
    runs["oom"].start(env={"SPARSESEG_TEST_FAULT": "oom"})
    runs["bug"] = new_job(root / "bug", case, **quick)
    runs["bug"].start(env={"SPARSESEG_TEST_FAULT": "bug"})

    cli_dir = root / "cli"
    cli_dir.mkdir()
    write_segmentation(painted(case.label), case.geometry, cli_dir / "painted.seg.nrrd", {1: "Anterior", 2: "Posterior"},
                       {1: (1.0, 0.0, 0.0), 2: (0.0, 0.0, 1.0)})
    # an ROI in RAS around voxels i 5..30, j 10..40, k 10..25 of the sample grid
    corners = (case.geometry.ijk_to_ras() @ np.array([[5, 10, 10, 1], [30, 40, 25, 1]]).T).T[:, :3]
    boxes = json.dumps([{"ras": corners.tolist()}])
    image = sample_dir / "imagesTr" / "hippocampus_001.nii.gz"
    command = [sys.executable, "-m", "SparseSegLib.cli", "run", "--image", str(image), "--annotation",
               str(cli_dir / "painted.seg.nrrd"), "--region", "boxes", "--boxes", boxes, "--method", "sparse-only",
               "--rounds", "2", "--iterations-per-round", "5", "--batch-size", "2", "--device", "cpu",
               "--reference", str(sample_dir / "labelsTr" / "hippocampus_001.nii.gz"), "--out", str(cli_dir / "job")]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    outcomes = {name: job.wait(timeout=180) for name, job in runs.items()}
    cli_out, cli_err = cli.communicate(timeout=180)
    return runs, outcomes, (cli.returncode, cli_out, cli_err, cli_dir / "job")


def test_unknown_method_is_a_clear_error(fault_runs):
    runs, outcomes, _ = fault_runs
    outcome = outcomes["unknown-method"]
    assert outcome.status == "error" and outcome.exit_code == layout.EXIT_USER_ERROR
    assert "unknown method 'magic-propagation'" in outcome.last_error["message"]
    assert "sparse-only" in outcome.last_error["hint"]
    assert "Traceback" not in runs["unknown-method"].output_tail()


def test_disk_full_ends_in_an_error_event_not_a_hang(fault_runs):
    runs, outcomes, _ = fault_runs
    outcome = outcomes["disk-full"]
    assert outcome.status == "error" and outcome.exit_code == layout.EXIT_USER_ERROR, outcome.message
    assert outcome.last_error["kind"] == "disk"
    assert "disk is full" in outcome.last_error["message"] and "resume" in outcome.last_error["hint"]
    assert outcome.rounds == []  # the round whose checkpoint could not be written never became complete
    assert list(runs["disk-full"].directory.rglob(".tmp-*")) == []


def test_out_of_memory_is_retried_once_with_half_the_batch(fault_runs):
    runs, outcomes, _ = fault_runs
    assert outcomes["oom-once"].status == "finished", outcomes["oom-once"].message
    events = read_events(runs["oom-once"].directory / layout.EVENTS_FILE)
    warning = [e for e in events if e["event"] == "warning"]
    assert len(warning) == 1 and "out of GPU memory" in warning[0]["message"] and "batch size 2 -> 1" in warning[0]["hint"]
    assert runs["oom-once"].round_record(1)["training"]["batch_size"] == 1


def test_out_of_memory_twice_suggests_the_cpu(fault_runs):
    _, outcomes, _ = fault_runs
    outcome = outcomes["oom"]
    assert outcome.status == "error" and outcome.exit_code == layout.EXIT_USER_ERROR
    assert outcome.last_error["kind"] == "oom" and "CPU" in outcome.last_error["hint"]


def test_worker_bug_is_reported_with_exit_code_and_error_event(fault_runs):
    runs, outcomes, _ = fault_runs
    outcome = outcomes["bug"]
    assert outcome.status == "crashed" and outcome.exit_code == layout.EXIT_BUG
    assert outcome.last_error["kind"] == "internal" and "injected fault" in outcome.last_error["message"]
    assert "exit code 1" in outcome.message and "injected fault" in outcome.message
    log = (runs["bug"].directory / layout.LOG_FILE).read_text()
    assert "Traceback" in log and "RuntimeError: injected fault" in log
    assert "Traceback" not in runs["bug"].output_tail()  # stderr stays clean; the traceback is in worker.log


def test_command_line_run_from_files_with_ras_boxes(fault_runs, case, sample_dir):
    _, _, (code, out, err, jobdir) = fault_runs
    assert code == 0, err
    assert "round 2/2 written" in err and "finished 2 round(s)" in err and str(jobdir) in out
    events = read_events(jobdir / layout.EVENTS_FILE)
    assert [e["round"] for e in events if e["event"] == "round"] == [1, 2]
    annotation_log = [e["message"] for e in events if e["event"] == "log" and e["message"].startswith("annotation:")]
    assert f"1 ROI box(es), {26 * 31 * 16} voxels" in annotation_log[0]  # i 5..30, j 10..40, k 10..25
    job = Job(jobdir)
    result = job.load_round()
    assert result.index == 2 and result.geometry.matches(case.geometry)
    assert result.record["classes"] == {"1": "Anterior", "2": "Posterior"}  # names from the .seg.nrrd
    reference, _ = read_image(sample_dir / "labelsTr" / "hippocampus_001.nii.gz")
    assert result.metrics["merged"]["dice"] == pytest.approx(mask_dice(result.label > 0, reference > 0), abs=1e-6)
    resumed = subprocess.run([sys.executable, "-m", "SparseSegLib.cli", "run", "--resume", str(jobdir)],
                             capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stderr
    bad = subprocess.run([sys.executable, "-m", "SparseSegLib.cli", "run", "--image", "x.nrrd", "--out", "y"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert bad.returncode == 2 and "needs --annotation" in bad.stderr and "Traceback" not in bad.stderr


def test_help_documents_run():
    result = subprocess.run([sys.executable, "-m", "SparseSegLib.cli", "--help"], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0 and "run" in result.stdout and "sparseseg run --resume job" in result.stdout
