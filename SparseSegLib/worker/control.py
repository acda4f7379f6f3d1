"""Stop requests, the job lock, the worker's own log and error kinds: what keeps one job run safe to stop."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from ..errors import SparseSegError
from ..jobs import layout


class JobCancelled(Exception):
    """Raised when a stop was requested; the worker then writes a ``cancelled`` event."""


def with_kind(error: SparseSegError, kind: str) -> SparseSegError:
    """``error`` tagged with the ``error`` event's kind (user, input, oom, ...), which the module shows differently."""
    error.kind = kind  # type: ignore[attr-defined]
    return error


class StopRequest:
    """Callable telling the training loop to stop: a ``CANCEL`` file exists, or SIGTERM/SIGINT arrived."""

    def __init__(self, jobdir: Path) -> None:
        self.cancel_file = jobdir / layout.CANCEL_FILE
        self.reason: str | None = None

    def install(self) -> None:
        """Catch SIGTERM and SIGINT (a second SIGINT interrupts at once, as a user pressing Ctrl-C twice expects)."""
        def on_signal(signum, frame):  # noqa: ARG001
            name = signal.Signals(signum).name
            if signum == signal.SIGINT and self.reason == "SIGINT":
                raise KeyboardInterrupt
            self.reason = self.reason or name

        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
            if hasattr(signal, name):
                with contextlib.suppress(ValueError, OSError):  # not the main thread
                    signal.signal(getattr(signal, name), on_signal)

    def __call__(self) -> bool:
        if self.reason:
            return True
        if self.cancel_file.exists():
            self.reason = "CANCEL file"
            return True
        return False


class JobLock:
    """An exclusive lock on ``JOBDIR/.lock`` (flock / msvcrt), released by the OS when the worker dies."""

    def __init__(self, jobdir: Path) -> None:
        self.path = jobdir / layout.LOCK_FILE
        self.fd = -1

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(self.fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = ""
            with contextlib.suppress(OSError, ValueError):
                other = f" (pid {int(os.pread(self.fd, 32, 0) or b'0')})" if hasattr(os, "pread") else ""
            os.close(self.fd)
            self.fd = -1
            raise SparseSegError(f"another worker is already running this job{other}: {self.path.parent}",
                                 "Wait for it to finish or cancel it (create the CANCEL file) before starting again.") from None
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, str(os.getpid()).encode(), 0) if hasattr(os, "pwrite") else None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class WorkerLog:
    """Appends lines to ``worker.log``; never raises (the log must not turn a full disk into a crash)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, text: str) -> None:
        with contextlib.suppress(OSError):
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {text.rstrip()}\n")
