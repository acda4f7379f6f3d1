"""What the worker's process tests share: the tiny job schedule, a painted annotation, a job on the sample case
and running the worker as a command (test_worker.py, test_worker_faults.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from SparseSegLib.jobs import layout
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.events import read_events, validate_event

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The same tiny schedule for every training job, so a resumed run can be compared with an uninterrupted one.
PARAMETERS = {"rounds": 3, "iterations_per_round": 30, "batch_size": 2, "threads": 1}
CLASSES = {1: "Anterior", 2: {"name": "Posterior", "color": [0.2, 0.4, 1.0]}}


def painted(label: np.ndarray, slices=(12, 17, 22)) -> np.ndarray:
    """A user's annotation: the reference label on three painted slices along k, nothing elsewhere."""
    result = np.zeros_like(label)
    result[list(slices)] = label[list(slices)]
    return result


def new_job(folder: Path, case, method: str = "sparse-only", **parameters) -> Job:
    return Job.create(folder, case.image, case.geometry, painted(case.label), method, reference=case.label,
                      classes=CLASSES, parameters={**PARAMETERS, **parameters}, device="cpu")


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
