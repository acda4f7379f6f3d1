"""Where things live in a job directory, and which rounds are complete.

::

    JOBDIR/
      job.json              what to run (see :mod:`.schema`); written by the client, read by the worker
      inputs/               image, annotation (and reference) when the client exported arrays
      events.jsonl          one JSON event per line, appended by the worker (see :mod:`.events`)
      rounds/001/           label.nrrd [probability-<class>.nrrd ...] [uncertainty.nrrd] round.json
      checkpoint/round-001.pt   resumable state after the newest complete round (older ones pruned)
      CANCEL                created by anyone who wants the worker to stop at the next step
      worker.log            the worker's own log (tracebacks of bugs land here)
      worker-output.log     the worker process's stdout/stderr, captured by the client
      .lock                 held (flock) by the running worker so two never share a job

A round is complete if and only if its ``round.json`` exists: the worker writes every other file of
the round (atomically) and the checkpoint first, and ``round.json`` last.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
INPUTS_DIR = "inputs"
ROUNDS_DIR = "rounds"
ROUND_FILE = "round.json"
CHECKPOINT_DIR = "checkpoint"
CANCEL_FILE = "CANCEL"
LOG_FILE = "worker.log"
OUTPUT_LOG_FILE = "worker-output.log"
LOCK_FILE = ".lock"
LABEL_FILE = "label.nrrd"
UNCERTAINTY_FILE = "uncertainty.nrrd"

#: Exit codes of ``python -m SparseSegLib.worker``.
EXIT_FINISHED = 0
EXIT_BUG = 1  # an unexpected exception: traceback in worker.log, an ``error`` event of kind "internal"
EXIT_USER_ERROR = 2  # a SparseSegError (bad job, missing input, out of memory, disk full): ``error`` event
EXIT_CANCELLED = 3  # CANCEL file or SIGTERM: ``cancelled`` event
EXIT_CODES = {
    EXIT_FINISHED: "finished",
    EXIT_BUG: "internal error",
    EXIT_USER_ERROR: "error",
    EXIT_CANCELLED: "cancelled",
}

_ROUND_NAME = re.compile(r"^(\d{3,})$")
_CHECKPOINT_NAME = re.compile(r"^round-(\d{3,})\.pt$")


def probability_file(value: int) -> str:
    """File name of the probability map of class ``value``."""
    return f"probability-{int(value)}.nrrd"


def round_name(index: int) -> str:
    """``rounds/NNN`` folder name of round ``index`` (1-based)."""
    return f"{int(index):03d}"


def round_dir(jobdir: str | os.PathLike, index: int) -> Path:
    return Path(jobdir) / ROUNDS_DIR / round_name(index)


def checkpoint_path(jobdir: str | os.PathLike, index: int) -> Path:
    return Path(jobdir) / CHECKPOINT_DIR / f"round-{int(index):03d}.pt"


def round_folders(jobdir: str | os.PathLike) -> dict[int, Path]:
    """Every ``rounds/NNN`` folder, complete or not, by index."""
    root = Path(jobdir) / ROUNDS_DIR
    if not root.is_dir():
        return {}
    found = {}
    for entry in root.iterdir():
        match = _ROUND_NAME.match(entry.name)
        if match and entry.is_dir():
            found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


def complete_rounds(jobdir: str | os.PathLike) -> list[int]:
    """Indices of the complete rounds (``round.json`` present), ascending."""
    return [index for index, folder in round_folders(jobdir).items() if (folder / ROUND_FILE).is_file()]


def last_complete_round(jobdir: str | os.PathLike) -> int:
    """The newest round ``K`` such that rounds ``1..K`` are all complete (0 when none is)."""
    done = set(complete_rounds(jobdir))
    last = 0
    while last + 1 in done:
        last += 1
    return last


def checkpoints(jobdir: str | os.PathLike) -> dict[int, Path]:
    """Checkpoint files by round index."""
    root = Path(jobdir) / CHECKPOINT_DIR
    if not root.is_dir():
        return {}
    found = {}
    for entry in root.iterdir():
        match = _CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_file():
            found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


def read_round_record(jobdir: str | os.PathLike, index: int) -> dict:
    """The parsed ``round.json`` of a complete round (raises FileNotFoundError for an incomplete one)."""
    return json.loads((round_dir(jobdir, index) / ROUND_FILE).read_text(encoding="utf-8"))
