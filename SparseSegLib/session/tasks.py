"""Child processes the Slicer module starts besides the worker: the dependency probe, "Save model" and
"Apply model to volume". Each runs in the Python the user chose for the worker (Slicer's own
``PythonSlicer`` by default), so torch is only ever imported there, never in the Slicer process, and none
of them is waited for on the GUI thread: the module polls them from its timer (:mod:`.controller`).

* :class:`BackgroundTask`: a ``subprocess.Popen`` with its output in a log file, polled without blocking,
  killed with its whole process tree on cancel; started without a console window on Windows
  (:func:`~SparseSegLib.jobs.processes.child_process_options`).
* :class:`ProbeTask`: which of torch / MONAI / SimpleITK / scipy / numpy import in that Python, torch's CUDA
  build, the GPUs and their memory (:func:`probe_environment` waits for it: scripts and tests).
* :func:`save_model`: the newest checkpoint of a job -> a model folder (``model.pt`` + ``config.json``), the
  format ``sparseseg predict`` and "Load model" read.
* :class:`ApplyModelTask`: export a volume, run ``sparseseg predict`` on it in the background, import the
  label map into a segmentation node with the model's class names and colours.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import SparseSegError
from ..jobs.processes import child_environment, child_process_options, default_python, kill_process_tree
from .text import tr as _  # named _ so that Slicer's lupdate_preprocess extracts the calls

#: Python packages the worker needs in its interpreter, with the pip requirement that installs them.
#: torch is special: inside Slicer it comes from the PyTorch extension (right CUDA build).
WORKER_REQUIREMENTS = {
    "torch": "torch>=2.1",
    "monai": "monai>=1.3",
    "SimpleITK": "SimpleITK>=2.3",
    "scipy": "scipy>=1.10",
    "numpy": "numpy>=1.24",
}

_PROBE_CODE = r"""
import importlib, json, sys
report = {"python": sys.executable, "version": sys.version.split()[0], "packages": {}, "missing": []}
for name in %(names)r:
    try:
        module = importlib.import_module(name)
        report["packages"][name] = getattr(module, "__version__", "?")
    except Exception as error:  # ImportError, or a broken install (OSError from a DLL)
        report["missing"].append(name)
        report.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"[:300]
if "torch" in report["packages"]:
    import torch
    report["cuda_build"] = torch.version.cuda
    report["cuda_available"] = bool(torch.cuda.is_available())
    report["gpus"] = []
    if report["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free = None
            try:
                free = torch.cuda.mem_get_info(index)[0]
            except Exception:
                pass
            report["gpus"].append({"index": index, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                                   "free_gb": None if free is None else round(free / 2**30, 1)})
    report["mps_available"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
print("SPARSESEG-PROBE " + json.dumps(report))
"""


def probe_environment(python: str | None = None, env: dict | None = None, timeout: float = 180.0) -> dict:
    """What the worker's Python has (see :class:`ProbeTask`), waiting for the answer: for scripts and tests.
    The module never calls this on the GUI thread; it polls a :class:`ProbeTask` from its timer."""
    task = ProbeTask(python, env=env)
    try:
        task.wait(timeout=timeout)
        return task.report()
    except TimeoutError:
        task.cancel()
        raise SparseSegError(_("the Python executable {python} did not report its packages within {seconds} s").format(
            python=task.python, seconds=f"{timeout:.0f}"), _("Choose a working Python 3 executable (empty = Slicer's own).")) from None
    finally:
        with contextlib.suppress(OSError):
            task.log.unlink()


def describe_environment(report: dict, device: str = "auto") -> str:
    """One paragraph for the log: packages, and the device the worker will use with its memory."""
    packages = ", ".join(f"{name} {version}" for name, version in report.get("packages", {}).items())
    text = _("worker Python {python} ({version}): {packages}").format(
        python=report.get("python"), version=report.get("version"), packages=packages or _("no packages"))
    if report.get("missing"):
        text += _("; missing: {packages}").format(packages=", ".join(report["missing"]))
    if "torch" in report.get("packages", {}):
        gpus = report.get("gpus") or []
        if device == "cpu":
            text += _("; device: CPU (chosen)")
        elif gpus:
            gpu = gpus[0]
            free = _(", {free} GB free").format(free=gpu["free_gb"]) if gpu.get("free_gb") is not None else ""
            text += _("; device: CUDA GPU {name} ({memory} GB{free})").format(name=gpu["name"], memory=gpu["memory_gb"],
                                                                               free=free)
        elif device == "cuda":
            text += _("; device: CUDA requested but not available (torch CUDA build: {build})").format(
                build=report.get("cuda_build") or _("none, CPU-only torch"))
        else:
            text += _("; device: CPU (no CUDA GPU visible to torch)")
    return text


def missing_requirements(report: dict) -> list[str]:
    """pip requirements for what the probe found missing (torch first when missing)."""
    return [WORKER_REQUIREMENTS[name] for name in WORKER_REQUIREMENTS if name in report.get("missing", [])]


class BackgroundTask:
    """A child process with output in ``log``, polled without blocking (``poll() -> None while running``)."""

    def __init__(self, command: list[str], log: str | os.PathLike, env: dict | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        self.command = [str(c) for c in command]
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._output = open(self.log, "ab")
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self._output,
                                            stderr=subprocess.STDOUT, env=child_environment(env),
                                            cwd=str(cwd) if cwd else None, **child_process_options())
        except OSError as error:
            self._output.close()
            raise SparseSegError(_("cannot start {program}: {error}").format(program=self.command[0], error=error),
                                 _("Choose a Python executable that has SparseSeg's dependencies installed.")) from None
        self.started = time.monotonic()

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None and not self._output.closed:
            self._output.close()
        return code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(self.command[:4])} still running after {timeout} s")
            time.sleep(0.05)
        return self.process.returncode

    def cancel(self) -> None:
        if self.poll() is None:
            kill_process_tree(self.process.pid, own_group=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        self.poll()

    def output_tail(self, size: int = 3000) -> str:
        with contextlib.suppress(OSError):
            data = self.log.read_bytes()[-size:]
            return data.decode("utf-8", "replace")
        return ""

    def failure(self) -> str:
        """The last meaningful line of the output (``sparseseg: error: ...`` lines first)."""
        lines = [line for line in self.output_tail().splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or [_("exit code {code}").format(code=self.process.returncode)])[-1][:400]


class ProbeTask(BackgroundTask):
    """The dependency probe in a background process: :meth:`report` is None while it runs, then
    ``{"python", "packages": {name: version}, "missing": [...], "cuda_build", "cuda_available",
    "gpus": [{"name", "memory_gb", "free_gb"}], ...}``; it raises SparseSegError when that Python cannot run.
    Importing torch takes seconds (minutes on a cold disk), hence never a wait on the GUI thread."""

    def __init__(self, python: str | None = None, env: dict | None = None, log: str | os.PathLike | None = None) -> None:
        self.python = str(python or default_python())
        if log is None:
            handle, log = tempfile.mkstemp(prefix="sparseseg-probe-", suffix=".log")
            os.close(handle)
        code = _PROBE_CODE % {"names": tuple(WORKER_REQUIREMENTS)}
        try:
            super().__init__([self.python, "-c", code], log, env=env)
        except SparseSegError:
            raise SparseSegError(_("cannot run the Python executable {python}").format(python=self.python),
                                 _("Choose an existing Python executable (empty = Slicer's own).")) from None

    def report(self) -> dict | None:
        if self.poll() is None:
            return None
        for line in self.output_tail(1 << 20).splitlines():
            if line.startswith("SPARSESEG-PROBE "):
                return json.loads(line[len("SPARSESEG-PROBE "):])
        raise SparseSegError(_("the Python executable {python} failed to report its packages: {reason}").format(
            python=self.python, reason=self.failure()), _("Choose a working Python 3 executable (empty = Slicer's own)."))


def save_model(job_directory: str | os.PathLike, model_directory: str | os.PathLike, python: str | None = None,
               env: dict | None = None) -> BackgroundTask:
    """Start writing the newest checkpoint of a job as a model folder (poll the returned task)."""
    model_directory = Path(model_directory)
    command = [python or default_python(), "-m", "SparseSegLib.worker.model_export", str(job_directory), str(model_directory)]
    return BackgroundTask(command, Path(job_directory) / "save-model.log", env=env)


def read_model_config(model_directory: str | os.PathLike) -> dict:
    """``config.json`` of a model folder (checked enough to name classes; the weights are read by the child)."""
    path = Path(model_directory) / "config.json"
    if not path.is_file() or not (Path(model_directory) / "model.pt").is_file():
        raise SparseSegError(_("{folder} is not a SparseSeg model folder (config.json and model.pt expected)").format(
            folder=model_directory), _("Choose a folder written by Save model or `sparseseg train`."))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SparseSegError(_("{path} is damaged ({error})").format(path=path, error=error), _("Save the model again.")) from None


class ApplyModelTask:
    """Segment a volume node with a saved model, in the background; :meth:`poll` imports the result.

    ``poll()`` returns None while the child runs, then the output segmentation node (or raises
    SparseSegError with the child's error line).
    """

    def __init__(self, model_directory, volume_node, work_dir, output_node=None, python: str | None = None,
                 device: str = "auto", env: dict | None = None) -> None:
        from ..io import write_image
        from . import mrml

        self.config = read_model_config(model_directory)
        self.volume_node = volume_node
        self.output_node = output_node
        self.geometry = mrml.volume_geometry(volume_node)
        self.ras_matrix = mrml.ijk_to_ras(volume_node)
        self.folder = Path(work_dir) / f"apply-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{id(self) % 10000}"
        image_path = write_image(mrml.volume_array(volume_node), self.geometry, self.folder / "image.nrrd", compress=False)
        self.output_path = self.folder / "predictions" / "image.nrrd"
        command = [python or default_python(), "-m", "SparseSegLib.cli", "predict", "--model", str(model_directory),
                   "--input", str(image_path), "--out", str(self.output_path.parent), "--device", device]
        environment = dict(env or {})
        if device == "cpu":
            environment.setdefault("CUDA_VISIBLE_DEVICES", "")
        self.task = BackgroundTask(command, self.folder / "predict.log", env=environment)
        self.result = None

    def cancel(self) -> None:
        self.task.cancel()

    def poll(self):
        if self.result is not None:
            return self.result
        code = self.task.poll()
        if code is None:
            return None
        if code != 0 or not self.output_path.is_file():
            raise SparseSegError(_("applying the model failed: {reason}").format(reason=self.task.failure()),
                                 _("See {log} for the full output.").format(log=self.task.log))
        self.result = self._import()
        return self.result

    def _import(self):
        from ..io import read_label
        from . import mrml
        from .session import CLASS_TAG

        label = read_label(self.output_path, self.geometry)
        scene = self.volume_node.GetScene()
        node = self.output_node
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{self.volume_node.GetName()} SparseSeg model")
            node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(self.volume_node)
        node.SetAndObserveTransformNodeID(self.volume_node.GetTransformNodeID())
        names = {int(k): v for k, v in (self.config.get("classes") or {}).items()}
        colors = {int(k): tuple(v) for k, v in (self.config.get("class_colors") or {}).items()}
        values = sorted(set(names) | {int(v) for v in set(label.ravel().tolist()) if v})
        classes = [mrml.SegmentClass(v, "", names.get(v, f"Class {v}"), colors.get(v, _default_color(v))) for v in values]
        ids = mrml.ensure_segments(node, classes)
        mrml.write_label_to_segments(node, label, self.ras_matrix, ids, tags={"SparseSeg.Model": self.config.get("method", "")})
        for value, segment_id in ids.items():
            node.GetSegmentation().GetSegment(segment_id).SetTag(CLASS_TAG, str(value))
        return node


def _default_color(value: int) -> tuple[float, float, float]:
    palette = [(0.9, 0.3, 0.2), (0.2, 0.6, 0.9), (0.3, 0.8, 0.3), (0.9, 0.8, 0.2), (0.7, 0.4, 0.9)]
    return palette[(value - 1) % len(palette)]


__all__ = ["ApplyModelTask", "BackgroundTask", "ProbeTask", "WORKER_REQUIREMENTS", "describe_environment", "missing_requirements",
           "probe_environment", "read_model_config", "save_model"]

if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(probe_environment(sys.argv[1] if len(sys.argv) > 1 else None), indent=2))
