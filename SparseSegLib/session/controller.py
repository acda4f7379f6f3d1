"""What the Slicer module's buttons start, advanced by the widget's one timer: never a blocking wait on the GUI thread.

:class:`ModuleController` is the module's session logic without Qt (the split SlicerNNUnet makes: parameters,
install logic, session logic, widget), so the headless tests drive exactly what the buttons do:

* :meth:`~ModuleController.start`: the first Start for a worker Python probes it in a background process
  (:class:`~.tasks.ProbeTask`) and returns None; :meth:`~ModuleController.poll` finishes the start once the
  probe has reported (missing packages in Slicer's own Python go to the ``install`` callback, which asks the
  user once and installs them, and a second probe checks the result). Later Starts reuse the report.
* :meth:`~ModuleController.save_model` and :meth:`~ModuleController.apply_model` start background processes;
  Apply without a saved model saves one first, then applies it.
* :meth:`~ModuleController.poll` advances all of them and reports what happened in a :class:`Tick`; a failure
  is reported once and its task cleared, so the next tick goes on (round streaming never stops because
  Apply failed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import SparseSegError
from . import tasks
from .text import tr as _  # named _ so that Slicer's lupdate_preprocess extracts the calls


def error_text(error: BaseException) -> str:
    """What a message box shows for ``error``: a SparseSegError's message and, on its own line, its hint
    (what to do); for anything else its type and text (a bug: the traceback goes to the details)."""
    if isinstance(error, SparseSegError):
        return f"{error.message}\n\n{error.hint}" if error.hint else error.message
    return f"{type(error).__name__}: {error}"


@dataclass
class Tick:
    """What one :meth:`ModuleController.poll` did."""

    started: Any = None  # the Session that started (after a background probe)
    saved: str | None = None  # the model folder that Save model finished writing
    applied: Any = None  # the segmentation node Apply model filled
    events: list = field(default_factory=list)  # the worker's new events
    errors: list = field(default_factory=list)  # (what failed: "start" | "session" | "save" | "apply", exception)


@dataclass
class _PendingStart:
    settings: Any
    make_session: Callable[[], Any]
    work_dir: Path
    log: Callable[[str], None] | None
    probe: tasks.ProbeTask | None = None
    installed: bool = False


class ModuleController:
    """The session, the dependency probe, Save model and Apply model of one module instance.

    ``install(requirements)`` installs pip requirements into Slicer's own Python (the module passes its
    install logic: a confirmation, then the PyTorch extension for torch and ``slicer.util.pip_install``);
    without it, missing packages are an error.
    """

    def __init__(self, install: Callable[[list], None] | None = None) -> None:
        self.install = install
        self.session = None
        self.environments: dict[str, dict] = {}  # probe reports of worker Pythons that have everything
        self.pending_start: _PendingStart | None = None
        self.save_task: tasks.BackgroundTask | None = None
        self.save_folder: str | None = None
        self.apply_task: tasks.ApplyModelTask | None = None
        self.apply_after_save: dict | None = None

    # -- state ----------------------------------------------------------------------------------------

    def busy(self) -> bool:
        """True while the timer has something to poll."""
        return bool(self.pending_start is not None or (self.session is not None and self.session.running)
                    or self.save_task is not None or self.apply_task is not None or self.apply_after_save)

    @property
    def checking(self) -> bool:
        """True while Start waits for the dependency probe."""
        return self.pending_start is not None

    # -- start ----------------------------------------------------------------------------------------

    def start(self, settings, make_session: Callable[[], Any], work_dir, log: Callable[[str], None] | None = None):
        """Start a session: ``make_session()`` builds it (not started) once the worker's Python is known to
        have torch and MONAI. Returns the started Session, or None while the probe runs in the background
        (then :meth:`poll` reports it in ``Tick.started``)."""
        if self.session is not None and self.session.running:
            raise SparseSegError(_("a session is already running"), _("Stop it first."))
        if self.pending_start is not None:
            raise SparseSegError(_("Start is already checking the worker's Python"),
                                 _("Wait a moment: the session starts when the check is done."))
        self.pending_start = _PendingStart(settings, make_session, Path(work_dir), log)
        try:
            report = self.environments.get(settings.worker_python())
            if report is None:
                self._probe()
                return None
            return self._complete_start(report)
        except BaseException:
            self._abandon_start()
            raise

    def _probe(self) -> None:
        pending = self.pending_start
        folder = pending.work_dir / "probe"
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"probe-{time.strftime('%Y%m%d-%H%M%S')}-{id(pending) % 10000}.log"
        pending.probe = tasks.ProbeTask(pending.settings.worker_python(), env=pending.settings.env or None, log=log)
        if pending.log:
            pending.log(_("checking the packages of the worker Python {python} (in the background)").format(
                python=pending.probe.python))

    def _complete_start(self, report: dict):
        pending = self.pending_start
        settings = pending.settings
        python = settings.worker_python()
        missing = tasks.missing_requirements(report)
        if missing:
            if settings.python:
                raise SparseSegError(_("the worker Python {python} lacks {packages}").format(python=python,
                                                                                          packages=", ".join(missing)),
                                     _("Install them into that environment (e.g. `{command}`) or leave the Python "
                                        "executable empty to use Slicer's own.").format(
                                         command=f"{python} -m pip install {' '.join(missing)}"))
            if pending.installed:
                raise SparseSegError(_("installing {packages} did not succeed").format(packages=", ".join(missing)),
                                     _("Restart Slicer and try again; see the Python console for pip's output."))
            if self.install is None:
                raise SparseSegError(_("Slicer's Python lacks {packages}").format(packages=", ".join(missing)),
                                     _("Install them, then press Start again."))
            self.install(missing)  # asks the user (once), then installs: a modal step the user chose
            pending.installed = True
            self._probe()
            return None
        if pending.log:
            pending.log(tasks.describe_environment(report, settings.device))
        if settings.device == "cuda" and not report.get("cuda_available"):
            raise SparseSegError(_("device CUDA was chosen but torch sees no CUDA GPU (torch CUDA build: {build})").format(
                build=report.get("cuda_build") or _("none, CPU-only torch")),
                _("Choose device auto or CPU, or install a CUDA build of torch that matches the driver."))
        self.environments[python] = report
        self.pending_start = None
        session = pending.make_session()
        if self.session is not None:
            self.session.close(block=False)
        self.session = session
        session.start()
        return session

    def _abandon_start(self) -> None:
        pending, self.pending_start = self.pending_start, None
        if pending is not None and pending.probe is not None:
            pending.probe.cancel()

    # -- models ---------------------------------------------------------------------------------------

    def save_model(self, folder, python: str | None = None) -> tasks.BackgroundTask:
        """Start writing the session's newest checkpoint as a model folder (``Tick.saved`` when done)."""
        if self.session is None or self.session.job is None or not self.session.imported_rounds:
            raise SparseSegError(_("no trained model yet"), _("Press Start and wait for a round first."))
        if self.save_task is not None:
            raise SparseSegError(_("a model is already being saved"), _("Wait for it to finish."))
        self.save_task = tasks.save_model(self.session.job.directory, folder, python=python)
        self.save_folder = str(folder)
        return self.save_task

    def apply_model(self, folder, volume_node, work_dir, python: str | None = None, device: str = "auto",
                    save_into=None):
        """Segment ``volume_node`` with the model in ``folder`` in the background (``Tick.applied`` when done).
        Without a folder the session's model is saved into ``save_into`` first, then applied."""
        if volume_node is None:
            raise SparseSegError(_("no volume to apply the model to"), _("Select a volume under 'Apply model to volume'."))
        if self.apply_task is not None or self.apply_after_save is not None:
            raise SparseSegError(_("a model is already being applied"), _("Wait for it to finish."))
        request = {"volume_node": volume_node, "work_dir": work_dir, "python": python, "device": device}
        if not folder:
            self.save_model(save_into, python=python)
            self.apply_after_save = request
            return None
        self.apply_task = tasks.ApplyModelTask(folder, **request)
        return self.apply_task

    # -- the timer ------------------------------------------------------------------------------------

    def poll(self) -> Tick:
        """Advance the probe, the session, Save and Apply; never blocks, never raises (see ``Tick.errors``)."""
        tick = Tick()
        steps = (("start", self._poll_start), ("session", self._poll_session), ("save", self._poll_save),
                 ("apply", self._poll_apply))
        for what, step in steps:
            try:
                step(tick)
            except Exception as error:  # reported once; the failed step has cleared its own state
                tick.errors.append((what, error))
        return tick

    def _poll_start(self, tick: Tick) -> None:
        pending = self.pending_start
        if pending is None or pending.probe is None:
            return
        try:
            report = pending.probe.report()
            if report is not None:
                pending.probe = None
                tick.started = self._complete_start(report)
        except BaseException:
            self._abandon_start()
            raise

    def _poll_session(self, tick: Tick) -> None:
        if self.session is not None:
            tick.events = self.session.poll()

    def _poll_save(self, tick: Tick) -> None:
        task = self.save_task
        if task is None or task.poll() is None:
            return
        self.save_task = None
        request, self.apply_after_save = self.apply_after_save, None
        if task.poll() != 0:
            raise SparseSegError(_("saving the model failed: {reason}").format(reason=task.failure()),
                                 _("See {log}.").format(log=task.log))
        tick.saved = self.save_folder
        if request is not None:
            self.apply_task = tasks.ApplyModelTask(self.save_folder, **request)

    def _poll_apply(self, tick: Tick) -> None:
        if self.apply_task is None:
            return
        try:
            result = self.apply_task.poll()
        except BaseException:
            self.apply_task = None  # a failed Apply is reported once, not on every tick
            raise
        if result is not None:
            self.apply_task = None
            tick.applied = result

    # -- stop, accept, close ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """The module or the scene closes: stop every child process."""
        if self.session is not None:
            self.session.close(block=False)
            self.session = None  # its nodes go with the scene; a new Start makes a new session
        self._abandon_start()
        for task in (self.save_task, self.apply_task):
            if task is not None:
                task.cancel()
        self.save_task = self.apply_task = self.apply_after_save = None


__all__ = ["ModuleController", "Tick", "error_text"]
