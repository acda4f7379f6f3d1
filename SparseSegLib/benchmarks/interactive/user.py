"""The simulated user on one scan: paint the central slice, Start, watch the rounds, correct, Continue.

Every job is what the Slicer module makes: :meth:`Job.create` with the module's region (painted slices, axis
auto), the data set's class names and the Start defaults, run by ``python -m SparseSegLib.worker`` as a separate
process (so the timings include the worker's start, as the user waits for it), and each correction stage is
made by :func:`SparseSegLib.jobs.continuation.continue_job` and resumed, as the module's Continue does. Rounds
are scored after their stage ends, so the scoring never competes with the worker for the CPU while it is timed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...annotation import object_extent
from ...errors import SparseSegError
from ...jobs.client import Job
from ...jobs.continuation import continue_job, paste_slices
from .baselines import copy_slices, fill_between_slices, painted_label
from .next_slice import choose_next
from .scans import Scan, central_slice, even_slices, slice_at
from .scoring import score


@dataclass(frozen=True)
class PlaySettings:
    """The job the user starts and how they go on (see :mod:`.cli` for the options that set these)."""

    method: str
    parameters: dict
    device: str = "auto"
    threads: int = 1
    slices: int = 5  # painted slices at the end (1 + corrections)
    first_at: float | None = None  # the first painted slice at this fraction of the object's extent (None: central)
    axis: int = 0  # the array axis the user paints across (0 = k: axial for most scans; 1, 2: the other views)
    correct_axis: int | None = None  # the axis the gap / worst corrections lie across (None: ``axis``)
    next_rule: str = "suggested"
    continue_rounds: int = 2
    stage_timeout_s: float = 3600.0
    poll_s: float = 0.1
    env: dict = field(default_factory=dict)

    def worker_env(self) -> dict:
        threads = str(int(self.threads))
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "SPARSESEG_SESSION": "benchmark"}
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        return {**env, **self.env}


def watch(job: Job, pressed: float, settings: PlaySettings, resume: bool) -> dict:
    """Start the worker and poll it like the module's timer until it ends: when each round arrived (seconds
    since the button was ``pressed``), how it ended, and its error message if any."""
    job.start(env=settings.worker_env(), resume=resume)
    arrivals: list[dict] = []
    deadline = time.monotonic() + settings.stage_timeout_s
    timed_out = False

    def take(events: list[dict]) -> None:
        now = time.perf_counter() - pressed
        arrivals.extend({"round": int(e["round"]), "seen_s": round(now, 2), "worker_s": e.get("elapsed_s")}
                        for e in events if e.get("event") == "round")

    while job.is_running():
        take(job.poll())
        if time.monotonic() > deadline:
            timed_out = True
            job.cancel(grace_s=5.0, term_grace_s=5.0, block=True)
            break
        time.sleep(settings.poll_s)
    while not job.reader.caught_up():
        take(job.poll())
    take(job.poll())
    outcome = job.wait(timeout=30)
    status = "timeout" if timed_out else outcome.status
    return {"status": status, "rounds": arrivals,
            "message": None if status == "finished" else (outcome.message if not timed_out
                                                           else f"stopped after {settings.stage_timeout_s:.0f} s")}


def _score_round(job: Job, index: int, reference: np.ndarray, spacing, classes: dict[int, str]) -> dict:
    data = job.load_round(index, probabilities=False)
    return score(data.label, reference, spacing, classes)


def _stage_record(number: int, job: Job, watched: dict, painted: list[dict]) -> dict:
    rounds = watched["rounds"]
    return {"stage": number, "job": str(job.directory), "painted": painted, "status": watched["status"],
            "message": watched["message"], "rounds": rounds,
            "first_s": rounds[0]["seen_s"] if rounds else None, "final_s": rounds[-1]["seen_s"] if rounds else None}


def baselines(reference: np.ndarray, spacing, classes: dict[int, str], counts: range,
              method_slices: list[list[int]] | None = None, axis: int = 0) -> dict:
    """Fill between slices and copy-the-slice with 1..N slices along ``axis`` evenly spread over the object's
    extent, and with the method's own painted slices at each stage (when they all lie along ``axis``)."""
    def both(slices: list[int]) -> dict:
        fill = fill_between_slices(painted_label(reference, slices, axis), axis)
        return {"slices": slices, "fill": score(fill, reference, spacing, classes),
                "copy": score(copy_slices(reference, slices, axis), reference, spacing, classes)}

    result = {"even": {str(n): both(even_slices(reference, n, axis)) for n in counts}, "method_slices": {}}
    if axis != 0:
        result["axis"] = axis
    for slices in method_slices or []:
        result["method_slices"][str(len(slices))] = both(slices)
    return result


def play_scan(scan: Scan, settings: PlaySettings, folder: Path, log=print) -> dict:
    """Play one scan (see module doc) in ``folder`` (emptied first); returns its record for results.json."""
    case = scan.load()
    reference, spacing, classes = case.label, case.geometry.spacing_kji, dict(case.class_names)
    if reference is None or not np.any(reference > 0):
        raise SparseSegError(f"{scan.key} has no foreground in its reference", "Leave this scan out.")
    if folder.exists():
        shutil.rmtree(folder)  # a scan interrupted by an earlier run starts again
    folder.mkdir(parents=True)
    axis = settings.axis
    k = central_slice(reference, axis) if settings.first_at is None else slice_at(reference, settings.first_at, axis)
    record = {**scan.describe(), "shape": list(reference.shape), "spacing_kji": list(spacing),
              "classes": {str(v): n for v, n in sorted(classes.items())},
              "extent": list(object_extent(reference, axis)), "axis": axis,
              "central_slice": central_slice(reference, axis), "first_slice": k, "stages": [], "status": "running"}
    label, mask = paste_slices(np.zeros_like(reference), np.zeros(reference.shape, bool), reference, axis, [k])
    painted = [{"axis": axis, "index": k, "source": "central" if settings.first_at is None else f"at {settings.first_at:g}"}]

    pressed = time.perf_counter()
    job = Job.create(folder / "stage-1", case.image, case.geometry, label, settings.method,
                     region={"kind": "slices", "axis": "auto"}, classes={v: {"name": n} for v, n in classes.items()},
                     parameters=settings.parameters, device=settings.device, seed=0, case_id=scan.case_id)
    watched = watch(job, pressed, settings, resume=False)
    stage = _stage_record(1, job, watched, list(painted))
    for entry in stage["rounds"]:
        entry["scores"] = _score_round(job, entry["round"], reference, spacing, classes)
    stage["final"] = stage["rounds"][-1]["scores"] if stage["rounds"] else None
    record["stages"].append(stage)
    log(f"[{scan.key}] stage 1 ({len(painted)} slice): {_summary(stage)}")

    while stage["status"] == "finished" and stage["rounds"] and len(painted) < settings.slices:
        current = job.load_round(None, probabilities=False)
        choice = choose_next(settings.next_rule, current.label, current.record, reference, mask,
                             axis if settings.correct_axis is None else settings.correct_axis)
        label, mask = paste_slices(label, mask, reference, choice.axis, [choice.index])
        painted.append(choice.as_dict())
        pressed = time.perf_counter()
        job = continue_job(job.directory, folder / f"stage-{len(painted)}", label, mask,
                           more_rounds=settings.continue_rounds)
        watched = watch(job, pressed, settings, resume=True)
        stage = _stage_record(len(painted), job, watched, list(painted))
        if watched["status"] == "finished" and not watched["rounds"]:
            stage["message"] = "the method planned no round after the earlier stage's last: the slice was not trained on"
        stage["final"] = (_score_round(job, stage["rounds"][-1]["round"], reference, spacing, classes)
                          if stage["rounds"] else None)
        record["stages"].append(stage)
        log(f"[{scan.key}] stage {len(painted)} (+ slice {choice.index} along axis {choice.axis}, {choice.source}"
            f"{': ' + choice.note if choice.note else ''}): {_summary(stage)}")

    own = [[p["index"] for p in s["painted"]] for s in record["stages"]
           if all(p["axis"] == axis for p in s["painted"])]
    # baselines up to 5 slices whatever the play stops at: "3 painted slices vs Fill between 5" needs both
    record["baselines"] = baselines(reference, spacing, classes, range(1, max(settings.slices, 5) + 1), own, axis)
    complete = all(s["status"] == "finished" and s["final"] for s in record["stages"]) and \
        len(record["stages"]) == settings.slices
    record["status"] = "done" if complete else "incomplete"
    return record


def _summary(stage: dict) -> str:
    if not stage["rounds"]:
        return f"{stage['status']}, no round: {stage['message']}"
    final = stage["final"] or {}
    text = (f"{len(stage['rounds'])} round(s), Dice {final.get('dice')}, RAVD {final.get('ravd')}; "
            f"first {stage['first_s']:.0f} s, final {stage['final_s']:.0f} s")
    return text if stage["status"] == "finished" else f"{text} ({stage['status']}: {stage['message']})"
