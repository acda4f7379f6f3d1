"""The worker proper: validate the job, resume after the newest complete round, run the method round by round."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..errors import SparseSegError
from ..jobs import layout
from ..jobs.atomic import remove_temporaries
from ..jobs.events import EventWriter
from ..jobs.schema import JobSpec, read_job
from .control import JobCancelled, StopRequest, WorkerLog, with_kind
from .inputs import read_job_case
from .memory import is_out_of_memory, reduce_memory
from .reporting import EventReporter
from .rounds import CHECKPOINT_FORMAT, RoundWriter
from .stages import stage_rounds

FAULT_ENV = "SPARSESEG_TEST_FAULT"
FAULTS = ("oom", "oom-once", "bug")


class Worker(RoundWriter):
    """One run of one job folder (the package docstring has the order of writes and the exit codes)."""


    def __init__(self, jobdir: Path, events: EventWriter, stop: StopRequest, log: WorkerLog) -> None:
        self.jobdir = jobdir
        self.events = events
        self.stop = stop
        self.log = log
        self.fault = os.environ.get(FAULT_ENV, "").strip().lower() or None
        self._fault_fired = False

    # -- inputs ---------------------------------------------------------------------------------

    def load_case(self, spec: JobSpec):
        """The job's case (image, annotation, annotated mask, class names) and the optional reference."""
        from ..annotation import check_annotation
        from ..io import read_label

        try:
            case, description = read_job_case(spec)
            summary = check_annotation(case.label, case.annotated)
            reference = read_label(spec.reference, case.geometry) if spec.reference is not None else None
        except SparseSegError as error:
            raise with_kind(error, "input")
        geometry = case.geometry
        classes = ", ".join(f"{v}: {n}" for v, n in sorted(summary.foreground_per_class.items()))
        self.events.emit("log", message=(
            f"annotation: {description}; {summary.annotated_voxels} annotated voxels "
            f"({100 * summary.fraction:.1f}% of {geometry.size[0]}x{geometry.size[1]}x{geometry.size[2]}), "
            f"foreground voxels per class {{{classes}}}"))
        for value in sorted(spec.classes):
            if value not in summary.foreground_per_class:
                name = spec.classes[value].get("name") or f"class {value}"
                self.events.emit("warning", message=(
                    f"{name} (label {value}) has no painted voxel in the annotated region, so it cannot appear in "
                    "the result"), hint="Paint it where it appears (a slice or a box that holds it), then Continue.")
        return case, reference

    # -- resume ---------------------------------------------------------------------------------

    def resume_point(self, spec: JobSpec, resume: bool) -> int:
        """The newest complete round to continue after; removes leftovers of an interrupted round."""
        complete = layout.complete_rounds(self.jobdir)
        done = layout.last_complete_round(self.jobdir)
        if complete and not resume:
            raise with_kind(SparseSegError(
                f"{self.jobdir} already holds {len(complete)} complete round(s) of an earlier run",
                f"Continue it with `sparseseg run --resume {self.jobdir}`, or give a new folder for a new job.",
            ), "user")
        if done and not layout.checkpoints(self.jobdir).get(done):
            raise with_kind(SparseSegError(
                f"cannot resume {self.jobdir}: the checkpoint of round {done} is missing",
                "Start the job again in a new folder (its finished rounds stay readable here).",
            ), "user")
        for index, folder in layout.round_folders(self.jobdir).items():
            if index > done:  # an interrupted round (or one past a gap): never complete, so never read
                shutil.rmtree(folder, ignore_errors=True)
                self.log.write(f"removed incomplete round folder {folder}")
        for index, path in layout.checkpoints(self.jobdir).items():
            if index > done:
                path.unlink(missing_ok=True)
        for folder in (self.jobdir / layout.ROUNDS_DIR, self.jobdir / layout.CHECKPOINT_DIR, self.jobdir):
            remove_temporaries(folder)
        return done

    def load_checkpoint(self, index: int) -> dict:
        import torch

        path = layout.checkpoint_path(self.jobdir, index)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or foreign file: many exception types
            raise with_kind(SparseSegError(f"cannot read the checkpoint {path}: {str(error).splitlines()[0][:160]}",
                                       "Start the job again in a new folder."), "user") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or payload.get("round") != index:
            raise with_kind(SparseSegError(f"{path} is not a SparseSeg checkpoint of round {index}",
                                       "Start the job again in a new folder."), "user")
        return payload

    def should_stop(self) -> bool:
        if self.fault and not self._fault_fired or self.fault == "oom":
            self._inject_fault()
        return self.stop()

    def _inject_fault(self) -> None:
        import torch

        self._fault_fired = True
        if self.fault in ("oom", "oom-once"):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by SPARSESEG_TEST_FAULT)")
        if self.fault == "bug":
            raise RuntimeError("injected fault (SPARSESEG_TEST_FAULT=bug)")

    # -- the job --------------------------------------------------------------------------------

    def run(self, resume: bool) -> int:
        started = time.perf_counter()
        try:
            spec = read_job(self.jobdir)
        except SparseSegError as error:
            raise with_kind(error, "user")
        if self.fault is not None and self.fault not in FAULTS:
            raise with_kind(SparseSegError(f"{FAULT_ENV}={self.fault!r} is not a known fault", f"Use one of {FAULTS}."), "user")
        done = self.resume_point(spec, resume)
        self.events.emit("started", pid=os.getpid(), method=spec.method, rounds=spec.rounds, resume_from=done,
                         device=spec.device, version=__version__, python=sys.executable)
        if spec.rounds is not None and done >= spec.rounds:
            return self.finish(spec, done, note="nothing to resume: every round is complete")
        case, reference = self.load_case(spec)
        if self.stop():
            raise JobCancelled()

        import torch  # noqa: F401  (the heavy part starts here)

        from ..engine.device import describe_device, select_device
        from ..methods import get_method
        from ..case import paint_digest
        from ..methods.base import MethodOptions, iter_rounds

        if spec.parameters["threads"]:
            torch.set_num_threads(int(spec.parameters["threads"]))
        method = get_method(spec.method)
        parameters = spec.parameters
        options = MethodOptions(
            network=parameters["network"], budget=parameters["budget"], device=spec.device, seed=spec.seed,
            iterations=parameters["iterations"], batch_size=parameters["batch_size"],
            learning_rate=parameters["learning_rate"],
            patch_size=tuple(parameters["patch_size"]) if parameters["patch_size"] else None,
            normalization=parameters["normalization"], augment=parameters["augment"],
            extra=dict(parameters["method_options"]), rounds=spec.rounds,
            iterations_per_round=parameters["iterations_per_round"],
        )
        device = select_device(spec.device)
        self.events.emit("log", message=f"device: {describe_device(device)}, torch {torch.__version__}, "
                                        f"{torch.get_num_threads()} CPU thread(s)")
        state, adjustments, stage = None, {}, None
        self.paint = paint_digest(case)
        if done:
            payload = self.load_checkpoint(done)
            state, adjustments = payload["state"], dict(payload.get("adjustments") or {})
            stage = payload.get("stage")
            if adjustments:
                options = replace(options, **{k: (tuple(v) if k == "patch_size" and v else v) for k, v in adjustments.items()})
                self.events.emit("log", message=f"resuming with the reduced settings of an earlier retry: {adjustments}")
        rounds = stage_rounds(method, case, options, state, done, stage, self.paint)  # :mod:`.stages`
        if done >= rounds:
            return self.finish(spec, done, note="nothing to resume: every round is complete")
        if spec.rounds is None:  # Rounds "auto": the method's plan for this stage
            options = replace(options, rounds=rounds)
            new_paint = " for the new paint" if stage and stage.get("paint") != self.paint else ""
            self.events.emit("log", message=f"{spec.method} plans {rounds - done} round(s){new_paint} "
                                            f"(rounds {done + 1}-{rounds})")
        self.planned = rounds
        reporter = EventReporter(self.events, rounds)
        reporter.round = done + 1
        retried = False
        while True:
            try:
                for result in iter_rounds(method, [case], options, reporter, state=state, should_stop=self.should_stop):
                    self.write_round(spec, case, reference, result, adjustments, started)
                    state, done = result.state, result.index
                    result = None  # its full-grid maps are on disk: not held through the next round (a CT: 0.6 GiB)
                    reporter.round = done + 1
                    if done < rounds and self.stop():
                        raise JobCancelled()
                break
            except Exception as error:
                if isinstance(error, JobCancelled) or not is_out_of_memory(error):
                    raise
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if retried:
                    raise with_kind(SparseSegError(
                        f"out of GPU memory in round {done + 1}, even after retrying with smaller settings",
                        "Run on the CPU instead (job.json \"device\": \"cpu\", or --device cpu; slower but not "
                        "limited by GPU memory), close other programs using the GPU, or lower parameters.patch_size.",
                    ), "oom") from None
                retried = True
                options, change = reduce_memory(options, case.image.shape, method)
                adjustments = {"batch_size": options.batch_size,
                               "patch_size": list(options.patch_size) if options.patch_size else None}
                self.events.emit("warning", message=f"out of GPU memory in round {done + 1}",
                                 hint=f"retrying from round {done + 1} once with {change}")
        return self.finish(spec, done)

    def finish(self, spec: JobSpec, done: int, note: str | None = None) -> int:
        if note:
            self.events.emit("log", message=note)
        record = layout.read_round_record(self.jobdir, done)
        self.events.emit("finished", rounds=done, label=record["files"]["label"], files=record["files"])
        return layout.EXIT_FINISHED
