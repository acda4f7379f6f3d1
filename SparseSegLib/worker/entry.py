"""Running a job folder from the command line or in-process: the lock, and an event for every way out."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from ..errors import SparseSegError
from ..jobs import layout
from ..jobs.atomic import is_disk_full
from ..jobs.events import EventWriter, format_event
from .control import JobCancelled, JobLock, StopRequest, WorkerLog
from .runner import Worker


def _error_event(events: EventWriter | None, error: SparseSegError, kind: str, **extra) -> None:
    """Emit an ``error`` event; falls back to stderr when even that cannot be written (disk full)."""
    try:
        if events is None:
            raise OSError("no events file")
        events.emit("error", message=error.message, hint=error.hint, kind=kind, **extra)
    except Exception:  # noqa: BLE001  (a full disk, or worse: the message must still get out)
        with contextlib.suppress(OSError):
            print(f"sparseseg worker: error: {error.one_line()}", file=sys.stderr, flush=True)


def run_job(jobdir: str | os.PathLike, resume: bool = False, echo: Callable[[dict], None] | None = None,
            install_signals: bool = True) -> int:
    """Run (or resume) the job in ``jobdir`` in this process; returns the worker's exit code."""
    jobdir = Path(jobdir)
    if not jobdir.is_dir():
        print(f"sparseseg worker: error: job folder not found: {jobdir}. Give the folder that holds job.json.",
              file=sys.stderr)
        return layout.EXIT_USER_ERROR
    stop = StopRequest(jobdir)
    if install_signals:
        stop.install()
    lock = JobLock(jobdir)
    try:
        lock.acquire()
    except SparseSegError as error:
        print(f"sparseseg worker: error: {error.one_line()}", file=sys.stderr)
        return layout.EXIT_USER_ERROR
    log = WorkerLog(jobdir / layout.LOG_FILE)
    events = None
    try:
        events = EventWriter(jobdir / layout.EVENTS_FILE, echo=echo)
        log.write(f"worker started (resume={resume})")
        return Worker(jobdir, events, stop, log).run(resume)
    except SparseSegError as error:
        kind = getattr(error, "kind", None) or ("disk" if is_disk_full(error) else "user")
        log.write(f"error ({kind}): {error.one_line()}")
        _error_event(events, error, kind)
        return layout.EXIT_USER_ERROR
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001  (every way out must leave an event)
        trainer = sys.modules.get("SparseSegLib.engine.trainer")  # loaded if training ran; never import torch here
        cancelled_types = (JobCancelled, KeyboardInterrupt) + ((trainer.TrainingCancelled,) if trainer else ())
        if isinstance(error, cancelled_types):
            reason = stop.reason or ("SIGINT" if isinstance(error, KeyboardInterrupt) else "CANCEL file")
            done = layout.last_complete_round(jobdir)
            log.write(f"cancelled ({reason}) after round {done}")
            try:
                if events is not None:
                    events.emit("cancelled", round=done, reason=reason)
            except OSError:
                pass
            return layout.EXIT_CANCELLED
        if is_disk_full(error):
            message = SparseSegError(f"the disk is full (or a file-size limit was hit) writing to {jobdir}: "
                                     f"{str(error).strip()[:160]}",
                                     "Free space on that disk or give a job folder on another disk, then resume "
                                     "with `sparseseg run --resume JOBDIR`.")
            log.write(f"error (disk): {message.one_line()}")
            _error_event(events, message, "disk")
            return layout.EXIT_USER_ERROR
        log.write("internal error:\n" + traceback.format_exc())
        _error_event(events, SparseSegError(f"internal error: {type(error).__name__}: {str(error)[:300]}",
                                            f"This is a bug; please report it with {jobdir / layout.LOG_FILE}."),
                     "internal", log=layout.LOG_FILE)
        return layout.EXIT_BUG
    finally:
        if events is not None:
            events.close()
        lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.worker",
                                     description="Run a SparseSeg job folder (job.json) round by round.")
    parser.add_argument("jobdir", type=Path, help="the job folder holding job.json")
    parser.add_argument("--resume", action="store_true", help="continue after the newest complete round")
    parser.add_argument("--echo", action="store_true", help="also print each event as a line on stderr")
    args = parser.parse_args(argv)
    echo = (lambda event: print(format_event(event), file=sys.stderr, flush=True)) if args.echo else None
    return run_job(args.jobdir, resume=args.resume, echo=echo)
