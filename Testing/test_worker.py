"""The background worker as a real process on the bundled hippocampus case: streaming rounds, a reader
polling while it writes, cancel (CANCEL file and SIGTERM), kill -9 + resume, and the failures a user can
meet (bad job, missing input, unknown method, disk full, out of GPU memory, a bug in the worker).

Training is tiny (2D network, batch 2, 30 iterations per round, one CPU thread per worker) so the
whole file runs in about a minute on two cores; the runs that need no precise timing start together.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from SparseSegLib.io import read_image, read_label, write_segmentation
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.atomic import sha256_file
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.events import read_events, validate_event
from SparseSegLib.metrics import mask_dice

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The same tiny schedule for every training job, so a resumed run can be compared with an uninterrupted one.
PARAMETERS = {"rounds": 3, "iterations_per_round": 30, "batch_size": 2, "threads": 1}
CLASSES = {1: "Anterior", 2: {"name": "Posterior", "color": [0.2, 0.4, 1.0]}}
GUI_MODULES = ("slicer", "vtk", "qt", "ctk", "PythonQt")


def painted(label: np.ndarray, slices=(12, 17, 22)) -> np.ndarray:
    """A user's annotation: the reference label on three painted slices along k, nothing elsewhere."""
    result = np.zeros_like(label)
    result[list(slices)] = label[list(slices)]
    return result


@pytest.fixture(scope="module")
def case(sample_dataset):
    return sample_dataset.load(sample_dataset.cases[0])


@pytest.fixture(scope="module")
def gui_blocker(tmp_path_factory):
    """A PYTHONPATH folder whose slicer/vtk/qt modules record any import attempt (the worker must make none)."""
    folder = tmp_path_factory.mktemp("gui-blocker")
    marker = folder / "imported.txt"
    for name in GUI_MODULES:
        (folder / f"{name}.py").write_text(
            f"with open({str(marker)!r}, 'a') as handle:\n    handle.write({name!r} + '\\n')\n"
            f"raise ImportError('the worker must not import {name}')\n")
    return {"PYTHONPATH": str(folder), "CUDA_VISIBLE_DEVICES": ""}, marker


def new_job(folder: Path, case, method: str = "sparse-only", **parameters) -> Job:
    return Job.create(folder, case.image, case.geometry, painted(case.label), method, reference=case.label,
                      classes=CLASSES, parameters={**PARAMETERS, **parameters}, device="cpu")


def verify_round(job: Job, index: int, geometry) -> list[str]:
    """Every file round.json lists exists, matches its checksum, loads, and lies on the input geometry."""
    problems = []
    record = json.loads((layout.round_dir(job.directory, index) / layout.ROUND_FILE).read_text())
    for key, relative in record["files"].items():
        path = job.directory / relative
        if not path.is_file():
            problems.append(f"round {index}: {relative} listed but missing")
            continue
        if sha256_file(path) != record["sha256"][key]:
            problems.append(f"round {index}: {relative} does not match its checksum")
        array, file_geometry = read_image(path)
        if not file_geometry.matches(geometry):
            problems.append(f"round {index}: {relative} geometry {file_geometry.describe_difference(geometry)}")
        if array.shape != geometry.shape:
            problems.append(f"round {index}: {relative} shape {array.shape}")
    return problems


class Watcher:
    """Polls a running job like the GUI's timer and checks everything it sees on the way."""

    def __init__(self, job: Job, geometry) -> None:
        self.job = job
        self.geometry = geometry
        self.problems: list[str] = []
        self.events: list[dict] = []
        self.verified: set[int] = set()
        self.polls = 0
        self.last_seq = 0

    def step(self) -> list[dict]:
        self.polls += 1
        new = self.job.poll()
        for event in new:
            self.problems += validate_event(event)
            if event.get("seq", 0) <= self.last_seq:
                self.problems.append(f"seq {event.get('seq')} after {self.last_seq}")
            self.last_seq = event.get("seq", self.last_seq)
            if event.get("event") == "round":
                if not (layout.round_dir(self.job.directory, event["round"]) / layout.ROUND_FILE).is_file():
                    self.problems.append(f"round event {event['round']} before its round.json")
                self.problems += [f"round event lists missing {p}" for p in event["files"].values()
                                  if not (self.job.directory / p).is_file()]
        for index in layout.complete_rounds(self.job.directory):
            if index not in self.verified:
                self.verified.add(index)
                self.problems += verify_round(self.job, index, self.geometry)
        self.events += new
        return new

    def until(self, predicate, timeout: float = 120.0) -> dict | None:
        """Poll until an event satisfies ``predicate`` (returned) or the worker exits (None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = self.job.is_running()
            for event in self.step():
                if predicate(event):
                    return event
            if not running:
                return None
            time.sleep(0.02)
        raise TimeoutError(f"no matching event within {timeout} s; last events {self.events[-3:]}")

    def to_end(self, timeout: float = 120.0):
        self.until(lambda event: False, timeout)
        return self.job.wait(timeout=30)


def snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every file of every complete round (round.json included)."""
    hashes = {}
    for index in layout.complete_rounds(directory):
        for path in sorted(layout.round_dir(directory, index).iterdir()):
            hashes[str(path.relative_to(directory))] = sha256_file(path)
    return hashes


# --------------------------------------------------------------------------------------------------
# Streaming, and a reader polling while the worker writes


@pytest.fixture(scope="module")
def streamed(tmp_path_factory, case, gui_blocker):
    env, marker = gui_blocker
    job = new_job(tmp_path_factory.mktemp("stream") / "job", case, save_probabilities=True, save_uncertainty=True)
    job.start(env=env)
    watcher = Watcher(job, case.geometry)
    outcome = watcher.to_end()
    return job, watcher, outcome, marker


def test_job_streams_rounds_with_input_geometry(streamed, case):
    job, watcher, outcome, marker = streamed
    assert outcome.status == "finished", outcome.message + job.output_tail()
    assert outcome.exit_code == 0
    kinds = [e["event"] for e in watcher.events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "error" not in kinds
    rounds = [e for e in watcher.events if e["event"] == "round"]
    assert [e["round"] for e in rounds] == [1, 2, 3]
    for event in rounds:
        assert set(event["files"]) == {"label", "probability-1", "probability-2", "uncertainty"}
        result = job.load_round(event["round"], verify=True)
        assert result.geometry.matches(case.geometry)
        assert result.label.shape == case.image.shape and set(np.unique(result.label)) <= {0, 1, 2}
        assert set(result.probabilities) == {1, 2}
        total = result.probabilities[1] + result.probabilities[2]
        assert total.min() >= 0 and total.max() <= 1 + 1e-5
        assert 0 <= result.uncertainty.min() and result.uncertainty.max() <= 1 + 1e-5
        # the round is scored on exactly the label it streamed, against the reference on the same grid
        assert result.metrics["merged"]["dice"] == pytest.approx(mask_dice(result.label > 0, case.label > 0), abs=1e-6)
        assert result.metrics["Anterior"]["dice"] == pytest.approx(mask_dice(result.label == 1, case.label == 1), abs=1e-6)
        assert result.record["classes"] == {"1": "Anterior", "2": "Posterior"}
        assert result.record["training"]["iterations_total"] == 30 * event["round"]
    # each round trains on: 90 steps on three painted slices of hippocampus_001 scored 0.137, 0.244, 0.368 (merged
    # Dice, one thread, repeatable); a worker that restarted or skipped training between rounds would not climb
    dice = [job.load_round(event["round"]).metrics["merged"]["dice"] for event in rounds]
    assert dice[0] < dice[1] < dice[2] and dice[2] > 0.25, dice
    progress = [e for e in watcher.events if e["event"] == "progress"]
    assert {e["round"] for e in progress} == {1, 2, 3}
    assert all(0 < e["step"] <= e["total"] == 30 and e["eta_s"] >= 0 for e in progress)
    finished = watcher.events[-1]
    assert finished["label"] == "rounds/003/label.nrrd" and outcome.final_label == job.directory / finished["label"]
    assert np.array_equal(read_label(outcome.final_label, case.geometry), job.load_round(3).label)
    assert layout.checkpoints(job.directory) == {3: layout.checkpoint_path(job.directory, 3)}  # older ones pruned
    assert not marker.exists(), f"the worker tried to import GUI modules: {marker.read_text()}"


def test_polling_reader_never_sees_partial_files_or_events(streamed):
    job, watcher, outcome, _ = streamed
    assert watcher.problems == []
    assert watcher.verified == {1, 2, 3}
    assert watcher.polls > 20  # polled all along, not once at the end
    assert not [e for e in watcher.events if e["event"] == "invalid"]
    assert [e["seq"] for e in watcher.events] == list(range(1, len(watcher.events) + 1))
    assert read_events(job.directory / layout.EVENTS_FILE) == watcher.events
    leftovers = [p for p in job.directory.rglob(".tmp-*")]
    assert leftovers == []


def test_each_round_names_the_least_certain_unpainted_slice(streamed, case):
    """Annotate next: round.json and the round event name a slice along the painted axis (k) that is inside the
    volume and not painted; it is what the scoring gives on the round's own uncertainty and label, and once
    the user paints it, the next suggestion is another slice."""
    from SparseSegLib.jobs.suggestion import SuggestedSlice, suggest_slice

    job, watcher, outcome, _ = streamed
    painted_slices = [12, 17, 22]
    annotated = np.zeros(case.image.shape, bool)
    annotated[painted_slices] = True
    rounds = [e for e in watcher.events if e["event"] == "round"]
    assert len(rounds) == 3
    for event in rounds:
        data = job.load_round(event["round"])
        suggestion = data.record["suggested_slice"]
        assert event["suggested_slice"] == suggestion
        assert suggestion["axis"] == 0 and 0 <= suggestion["index"] < case.image.shape[0]
        assert suggestion["index"] not in painted_slices and suggestion["score"] > 0
        assert suggest_slice(data.uncertainty, data.label, annotated, 0) == suggestion
        assert SuggestedSlice.from_record(data.record).index == suggestion["index"]
        repainted = annotated.copy()
        repainted[suggestion["index"]] = True
        after = suggest_slice(data.uncertainty, data.label, repainted, 0)
        assert after is not None and after["index"] not in painted_slices + [suggestion["index"]]


# --------------------------------------------------------------------------------------------------
# Cancel, kill -9 and resume


def test_cancel_file_stops_within_seconds_and_keeps_finished_rounds(tmp_path, case):
    job = new_job(tmp_path / "job", case, iterations_per_round=400)
    job.start()
    watcher = Watcher(job, case.geometry)
    watcher.until(lambda e: e["event"] == "progress" and e["step"] >= 5)
    # a second worker on the same job is refused at once (the job lock), without touching the first
    second = subprocess.run([sys.executable, "-m", "SparseSegLib.worker", str(job.directory)], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=60)
    assert second.returncode == layout.EXIT_USER_ERROR and "already running" in second.stderr
    assert "Traceback" not in second.stderr
    requested = time.monotonic()
    job.request_cancel()
    outcome = watcher.to_end(timeout=30)
    assert time.monotonic() - requested < 5.0
    assert outcome.status == "cancelled" and outcome.exit_code == layout.EXIT_CANCELLED
    cancelled = watcher.events[-1]
    assert cancelled["event"] == "cancelled" and cancelled["reason"] == "CANCEL file" and cancelled["round"] == 0
    assert watcher.problems == []


def test_cancel_during_round_2_keeps_round_1(tmp_path, case):
    job = new_job(tmp_path / "job", case, rounds=2)
    job.start()
    watcher = Watcher(job, case.geometry)
    watcher.until(lambda e: e["event"] == "progress" and e["round"] == 2)
    before = snapshot(job.directory)
    outcome = job.cancel(grace_s=5, term_grace_s=5)
    assert outcome.status == "cancelled"
    cancelled = job.history[-1]  # cancel() polled the remaining events into the job's history
    assert cancelled["event"] == "cancelled" and cancelled["reason"] == "CANCEL file"
    assert cancelled["round"] >= 1 and layout.complete_rounds(job.directory) == list(range(1, cancelled["round"] + 1))
    after = snapshot(job.directory)
    assert before and {k: after[k] for k in before} == before
    assert watcher.problems == []


def test_sigterm_stops_at_next_step(tmp_path, case):
    job = new_job(tmp_path / "job", case, rounds=1, iterations_per_round=400)
    job.start()
    watcher = Watcher(job, case.geometry)
    watcher.until(lambda e: e["event"] == "progress")
    job.cancel(grace_s=0, term_grace_s=10, block=False)  # no grace: the next poll sends SIGTERM
    signalled = time.monotonic()
    outcome = watcher.to_end(timeout=30)
    assert time.monotonic() - signalled < 5.0
    assert outcome.status == "cancelled" and watcher.events[-1]["reason"] == "SIGTERM"


def test_kill_9_then_resume_keeps_earlier_rounds_and_matches_an_uninterrupted_run(tmp_path, case, streamed):
    job = new_job(tmp_path / "job", case)
    job.start()
    watcher = Watcher(job, case.geometry)
    watcher.until(lambda e: e["event"] == "progress" and e["round"] == 2)
    os.kill(job.pid, signal.SIGKILL)
    crashed = job.wait(timeout=30)
    assert crashed.status == "crashed" and crashed.exit_code == -signal.SIGKILL and crashed.last_error is None
    assert "killed by signal SIGKILL" in crashed.message
    killed_in = layout.last_complete_round(job.directory) + 1
    assert killed_in in (2, 3)
    before = snapshot(job.directory)
    assert before and all(int(key.split("/")[1]) < killed_in for key in before)

    job.resume()
    outcome = watcher.to_end()
    assert outcome.status == "finished", outcome.message + job.output_tail()
    assert watcher.problems == []
    after = snapshot(job.directory)
    assert {k: after[k] for k in before} == before  # rounds < k: byte for byte the same files
    assert layout.complete_rounds(job.directory) == [1, 2, 3]
    started = [e for e in watcher.events if e["event"] == "started"]
    assert [e["resume_from"] for e in started] == [0, killed_in - 1]
    resumed_rounds = [e["round"] for e in watcher.events[watcher.events.index(started[1]):] if e["event"] == "round"]
    assert resumed_rounds == list(range(killed_in, 4))
    final = read_label(outcome.final_label, case.geometry)
    # the checkpoint carries weights and the sampler's random stream: the resumed job ends where an
    # uninterrupted one (the streamed fixture, same schedule and seed) does
    uninterrupted = streamed[0].load_round(3).label
    assert np.array_equal(final, uninterrupted)


# --------------------------------------------------------------------------------------------------
# Errors a user can act on, and crashes


def run_worker(jobdir: Path, *args: str, env: dict | None = None, timeout: float = 120) -> tuple[int, str, list[dict]]:
    result = subprocess.run([sys.executable, "-m", "SparseSegLib.worker", str(jobdir), *args], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=timeout, env={**os.environ, **(env or {})})
    events = read_events(jobdir / layout.EVENTS_FILE) if (jobdir / layout.EVENTS_FILE).exists() else []
    return result.returncode, result.stderr + result.stdout, events


def last_error(events: list[dict]) -> dict:
    errors = [e for e in events if e["event"] == "error"]
    assert errors, events
    assert all(not validate_event(e) for e in events)
    return errors[-1]


@pytest.mark.parametrize(
    "job_text, words",
    [
        ('{"schema_version": 1, "method": "sparse-only",', ["not valid JSON", "line 1"]),
        ('{"schema_version": 1, "method": "sparse-only", "inputs": {"image": "i.nrrd", "annotation": "a.nrrd"}, '
         '"parameters": {"iteration": 5}}', ["unknown key 'parameters.iteration'", "Did you mean 'iterations'"]),
        ('{"schema_version": 1, "method": "sparse-only", "inputs": {"image": "i.nrrd", "annotation": "a.nrrd"}, '
         '"parameters": {"rounds": -2}}', ["parameters.rounds", "from 1 to 1000", "not -2"]),
        ('{"schema_version": 1, "method": "sparse-only", "inputs": {"image": "missing.nrrd", "annotation": "a.nrrd"}}',
         ["image not found", "missing.nrrd"]),
        ('{"schema_version": 1, "method": "sparse-only", "inputs": {"image": "broken.nrrd", "annotation": "a.nrrd"}}',
         ["cannot read image", "broken.nrrd"]),
    ],
)
def test_bad_job_or_inputs_give_an_error_event_and_exit_2(tmp_path, job_text, words):
    (tmp_path / "job.json").write_text(job_text)
    (tmp_path / "broken.nrrd").write_text("NRRD0004\nthis is not an image\n")
    code, output, events = run_worker(tmp_path)
    assert code == layout.EXIT_USER_ERROR
    error = last_error(events)
    for word in words:
        assert word in error["message"] + " " + error["hint"], error
    assert error["hint"] and error["kind"] in ("user", "input")
    assert "Traceback" not in output and "Traceback" not in (tmp_path / layout.LOG_FILE).read_text()


def test_missing_job_folder_is_one_line_on_stderr(tmp_path):
    code, output, _ = run_worker(tmp_path / "nowhere")
    assert code == layout.EXIT_USER_ERROR and "job folder not found" in output and "Traceback" not in output


def test_rerun_of_a_finished_job_needs_resume(tmp_path, streamed):
    copy = tmp_path / "job"
    shutil.copytree(streamed[0].directory, copy)
    before = snapshot(copy)
    code, output, events = run_worker(copy)
    assert code == layout.EXIT_USER_ERROR and "--resume" in last_error(events)["hint"]
    code, output, events = run_worker(copy, "--resume")
    assert code == 0 and events[-1]["event"] == "finished" and events[-1]["label"] == "rounds/003/label.nrrd"
    assert snapshot(copy) == before


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
