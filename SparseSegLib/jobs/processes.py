"""Starting and stopping child Pythons that run SparseSegLib (worker, probe, export), and how a run ended.

Used by the jobs client and the Slicer session's other tasks; no torch, no Slicer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: The folder that holds the ``SparseSegLib`` package; put on the worker's PYTHONPATH.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
#: Windows process-creation flags (``subprocess`` defines them only on Windows).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW, SW_HIDE = 0x00000001, 0


def child_process_options(windows: bool | None = None) -> dict:
    """``Popen`` keyword arguments for every child SparseSeg starts (worker, probe, Save / Apply model).

    POSIX: a new session, so a cancel can kill the child's whole process group. Windows: a new process group
    and no console window. PythonSlicer is a console program, so a plain ``Popen`` from the Slicer GUI opens a
    console window, and closing that window kills the job. ``CREATE_NO_WINDOW`` plus a hidden ``STARTUPINFO``
    is what Slicer's ``slicer.util.launchConsoleProcess`` does to hide it (Base/Python/slicer/util.py, 5.6-main);
    that helper pipes stdout for ``logProcessOutput``, which a job that runs for minutes must not do, so it is
    not used here.
    """
    windows = os.name == "nt" if windows is None else windows
    if not windows:
        return {"start_new_session": True}
    options: dict = {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    if hasattr(subprocess, "STARTUPINFO"):
        info = subprocess.STARTUPINFO()
        info.dwFlags |= STARTF_USESHOWWINDOW
        info.wShowWindow = SW_HIDE
        options["startupinfo"] = info
    return options


def default_python() -> str:
    """The Python to run the worker with: this interpreter, or PythonSlicer inside 3D Slicer."""
    executable = Path(sys.executable)
    if executable.name.lower().startswith("python"):
        return str(executable)
    for candidate in ("PythonSlicer", "PythonSlicer.exe"):  # Slicer's sys.executable is the Slicer binary
        for folder in (executable.parent, executable.parent / "bin"):
            if (folder / candidate).is_file():
                return str(folder / candidate)
    return sys.executable


@dataclass
class JobOutcome:
    """How a worker run ended, as a GUI should report it."""

    status: str  # "running", "finished", "cancelled", "error", "crashed"
    exit_code: int | None
    rounds: list[int]
    last_error: dict | None = None
    final_label: Path | None = None
    output_tail: str = ""

    @property
    def message(self) -> str:
        """One paragraph for the user."""
        if self.status == "finished":
            return f"finished {len(self.rounds)} round(s); final label map {self.final_label}"
        if self.status == "cancelled":
            return f"cancelled; {len(self.rounds)} complete round(s) kept"
        if self.status == "running":
            return "running"
        code = self.exit_code
        how = (f"killed by signal {_signal_name(-code)}" if isinstance(code, int) and code < 0
               else f"exit code {code}")
        text = f"the worker stopped ({how})"
        if self.last_error:
            hint = f" {self.last_error.get('hint')}" if self.last_error.get("hint") else ""
            text += f": {str(self.last_error.get('message', '')).rstrip('.')}.{hint}"
        elif self.output_tail.strip():
            text += f"; its last output: {self.output_tail.strip().splitlines()[-1][:300]}"
        return text


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def child_environment(extra: dict | None = None) -> dict:
    """The environment of a child Python running SparseSegLib: ours, with ``extra`` applied (None removes
    a variable, e.g. CUDA_VISIBLE_DEVICES), this package first on PYTHONPATH and unbuffered output."""
    environment = dict(os.environ)
    for key, value in (extra or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = str(value)
    paths = [str(PACKAGE_PARENT)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def kill_process_tree(pid: int, own_group: bool = False) -> None:
    """Kill ``pid`` and all its descendants (psutil), and its process group when it leads one."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            processes = parent.children(recursive=True) + [parent]
        except psutil.Error:
            processes = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        with contextlib.suppress(psutil.Error):
            psutil.wait_procs(processes, timeout=5)
    if os.name == "nt":
        if psutil is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False,
                           creationflags=CREATE_NO_WINDOW)
    elif own_group or psutil is None:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
