"""The background worker as a real process on the bundled hippocampus case: streaming rounds, a reader
polling while it writes, cancel (CANCEL file and SIGTERM), kill -9 + resume, a bad job or missing input, and a
finished job run again (the other failures: test_worker_faults.py).

Training is tiny (2D network, batch 2, 30 iterations per round, one CPU thread per worker) so the
whole file runs in about a minute on two cores; the runs that need no precise timing start together.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from SparseSegLib.io import read_image, read_label
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.atomic import sha256_file
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.events import read_events, validate_event
from SparseSegLib.metrics import mask_dice

from worker_support import CLASSES, PARAMETERS, REPO_ROOT, last_error, new_job, painted, run_worker

pytestmark = pytest.mark.slow

GUI_MODULES = ("slicer", "vtk", "qt", "ctk", "PythonQt")


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


def test_a_class_without_paint_is_a_warning_that_says_what_to_do(tmp_path, case):
    """A segment created but not painted on the annotated slices cannot be found: the user hears it at Start."""
    classes = {**CLASSES, 3: "Tumour"}
    job = Job.create(tmp_path / "job", case.image, case.geometry, painted(case.label), "sparse-only", classes=classes,
                     parameters={**PARAMETERS, "rounds": 1, "iterations_per_round": 2}, device="cpu")
    code, output, events = run_worker(job.directory)
    assert code == 0, output
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["message"].startswith("Tumour (label 3) has no painted voxel")
    assert "Continue" in warnings[0]["hint"]


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
