"""Create, run, watch, cancel and resume worker jobs, and load their rounds: the GUI side of the protocol.

Nothing here imports torch, MONAI or the engine: the 3D Slicer GUI process uses this module while the
training runs in a separate ``python -m SparseSegLib.worker`` process. Typical use from a GUI timer::

    job = Job.create(folder, image_array, geometry, painted_label_array, method="sparse-only",
                     parameters={"rounds": 5})
    job.start(python=python_executable, env={"CUDA_VISIBLE_DEVICES": "0"})
    ...
    for event in job.poll():            # never blocks; call it from a QTimer
        if event["event"] == "round":
            result = job.load_round(event["round"])   # label map + geometry, ready to import
    ...
    job.cancel(block=False)              # CANCEL file now; poll() escalates to SIGTERM, then a tree kill
    job.start(resume=True)               # continue after the newest complete round

Each method that waits (``wait``, ``cancel(block=True)``) is meant for scripts and tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import SparseSegError
from . import layout
from .atomic import atomic_write_json
from .creation import JobCreation
from .events import EventReader
from .processes import JobOutcome, child_environment, child_process_options, default_python, kill_process_tree
from .results import JobResults, RoundData
from .schema import JobSpec, read_job


class Job(JobCreation, JobResults):
    """A job folder and (optionally) the worker process this client started for it."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).resolve()
        self.reader = EventReader(self.directory / layout.EVENTS_FILE)
        self.history: list[dict] = []
        self.process: subprocess.Popen | None = None
        self.last_error: dict | None = None
        self.terminal_event: dict | None = None
        self.last_progress: dict | None = None
        self._output = None
        self._cancel: dict | None = None

    @property
    def spec(self) -> JobSpec:
        return read_job(self.directory)

    # -- the worker process -----------------------------------------------------------------------

    def start(
        self,
        python: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        resume: bool = False,
        preexec_fn=None,
    ) -> subprocess.Popen:
        """Start ``python -m SparseSegLib.worker`` on this job (``--resume`` to continue it).

        ``env`` adds to (or, with value None, removes from) this process's environment, e.g.
        ``{"CUDA_VISIBLE_DEVICES": "1"}``. The worker runs in its own process group/session, so that a
        cancel can take down anything it started; its output goes to ``worker-output.log``.
        """
        if self.is_running():
            raise SparseSegError(f"a worker is already running for {self.directory}", "Wait for it or cancel it first.")
        if not (self.directory / layout.JOB_FILE).is_file():
            raise SparseSegError(f"no job.json in {self.directory}", "Create the job first (Job.create).")
        (self.directory / layout.CANCEL_FILE).unlink(missing_ok=True)
        environment = child_environment(env)
        command = [str(python or default_python()), "-m", "SparseSegLib.worker", str(self.directory)]
        if resume:
            command.append("--resume")
        self._close_output()
        self._output = open(self.directory / layout.OUTPUT_LOG_FILE, "ab")
        options: dict[str, Any] = child_process_options()  # own group/session; no console window on Windows
        if os.name != "nt" and preexec_fn is not None:
            options["preexec_fn"] = preexec_fn
        self.terminal_event = None
        self.last_error = None
        self._cancel = None
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._output,
                                            stderr=subprocess.STDOUT, env=environment, cwd=str(self.directory), **options)
        except OSError as error:
            self._close_output()
            raise SparseSegError(f"cannot start the worker with {command[0]}: {error.strerror or error}",
                                 "Choose a Python executable that has SparseSeg's dependencies (torch, MONAI) installed.") from None
        return self.process

    def resume(self, **kwargs) -> subprocess.Popen:
        """:meth:`start` with ``resume=True``."""
        return self.start(resume=True, **kwargs)

    @property
    def pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        started = next((e for e in reversed(self.history) if e.get("event") == "started"), None)
        return int(started["pid"]) if started else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def is_running(self) -> bool:
        """True while the worker process lives (for a job this client did not start: its pid from the
        ``started`` event, checked with psutil, until a terminal event arrives)."""
        if self.process is not None:
            return self.process.poll() is None
        pid = self.pid
        if pid is None or self.terminal_event is not None:
            return False
        try:
            import psutil
        except ImportError:
            return False
        try:
            process = psutil.Process(pid)
            return process.is_running() and "SparseSegLib.worker" in " ".join(process.cmdline())
        except (psutil.Error, OSError):
            return False

    def poll(self) -> list[dict]:
        """New events since the last call (never blocks); also advances a non-blocking cancel."""
        events = self.reader.poll()
        for event in events:
            kind = event.get("event")
            if kind == "error":
                self.last_error = event
            elif kind == "progress":
                self.last_progress = event
            elif kind == "started":
                self.terminal_event = None
            if kind in ("error", "cancelled", "finished"):
                self.terminal_event = event
        self.history.extend(events)
        if self._cancel is not None:
            self._advance_cancel()
        return events

    # -- cancelling --------------------------------------------------------------------------------

    def request_cancel(self) -> None:
        """Create the CANCEL file: the worker stops at its next training step and writes ``cancelled``."""
        atomic_write_json(self.directory / layout.CANCEL_FILE, {"requested": time.time()}, sync=False)

    def cancel(self, grace_s: float = 10.0, term_grace_s: float = 5.0, block: bool = True) -> JobOutcome | None:
        """Stop the worker: CANCEL file; after ``grace_s`` SIGTERM; after ``term_grace_s`` more, kill the tree.

        With ``block=False`` this returns at once and :meth:`poll` carries out the escalation.
        """
        self.request_cancel()
        now = time.monotonic()
        self._cancel = {"stage": "file", "term_at": now + grace_s, "kill_at": now + grace_s + term_grace_s}
        if not block:
            return None
        while self.is_running():
            self._advance_cancel()
            time.sleep(0.05)
        return self.wait(timeout=term_grace_s + 5)

    def _advance_cancel(self) -> None:
        if not self.is_running():
            self._cancel = None
            return
        now = time.monotonic()
        if self._cancel["stage"] == "file" and now >= self._cancel["term_at"]:
            self._cancel["stage"] = "term"
            self._signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
        elif self._cancel["stage"] == "term" and now >= self._cancel["kill_at"]:
            self._cancel["stage"] = "kill"
            self.kill()

    def _signal(self, number: int) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(OSError, ProcessLookupError):
            if self.process is not None:
                self.process.send_signal(number)
            else:
                os.kill(pid, number)

    def kill(self) -> None:
        """Kill the worker and every process it started (psutil; the process group as a fallback)."""
        pid = self.pid
        if pid is None or not self.is_running():
            return
        kill_process_tree(pid, own_group=self.process is not None)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    # -- waiting and reporting ---------------------------------------------------------------------

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> JobOutcome:
        """Wait for the worker to exit (polling events meanwhile); raises TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_running():
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the worker of {self.directory} is still running after {timeout} s")
            time.sleep(interval)
        self.poll()
        while not self.reader.caught_up():
            self.poll()
        self._close_output()
        return self.outcome()

    def outcome(self) -> JobOutcome:
        """The job's state now: status, exit code, complete rounds, the last error event, output tail."""
        code = self.returncode
        rounds = layout.complete_rounds(self.directory)
        terminal = self.terminal_event.get("event") if self.terminal_event else None
        if self.is_running():
            status = "running"
        elif code is not None:
            status = {layout.EXIT_FINISHED: "finished", layout.EXIT_CANCELLED: "cancelled",
                      layout.EXIT_USER_ERROR: "error"}.get(code, "crashed")
            if status == "finished" and terminal != "finished":
                status = "crashed"  # exit 0 without a finished event: not a worker we know
        else:
            status = {"finished": "finished", "cancelled": "cancelled", "error": "error"}.get(terminal, "crashed")
        final = None
        if status == "finished" and self.terminal_event:
            final = self.directory / self.terminal_event["label"]
        tail = ""
        if status in ("crashed", "error"):
            tail = self.output_tail()
        return JobOutcome(status, code, rounds, self.last_error, final, tail)

    def output_tail(self, size: int = 4000) -> str:
        """The end of the worker's captured stdout/stderr (import errors, segfault messages, ...)."""
        path = self.directory / layout.OUTPUT_LOG_FILE
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - size))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _close_output(self) -> None:
        if self._output is not None:
            with contextlib.suppress(OSError):
                self._output.close()
            self._output = None


def load_job_events(directory: str | os.PathLike) -> list[dict]:
    """Every complete event of a job folder."""
    from .events import read_events

    return read_events(Path(directory) / layout.EVENTS_FILE)


__all__ = ["Job", "JobOutcome", "RoundData", "default_python", "kill_process_tree", "load_job_events"]
