"""The training worker: ``python -m SparseSegLib.worker [--resume] JOBDIR`` (also ``sparseseg run``).

Reads and validates ``JOBDIR/job.json`` (:mod:`.jobs.schema`), loads the image and the user's
annotation (deriving the annotated mask as in 3D Slicer, :mod:`.jobs.regions`), runs the method round
by round (:func:`~SparseSegLib.methods.base.iter_rounds`) and after every round writes, in this order:

1. ``rounds/NNN/label.nrrd`` (and optional probability / uncertainty maps), each atomically;
2. ``checkpoint/round-NNN.pt``: the method's resumable state (``torch.load(weights_only=True)``-safe);
3. ``rounds/NNN/round.json`` (atomic, fsynced): the commit point, a round is complete iff it exists;
   it also names the slice to annotate next, the one the round is least sure of (:mod:`.jobs.suggestion`);
4. a ``round`` event; then older checkpoints are pruned.

So ``kill -9`` loses at most the round in progress, and ``--resume`` continues after the newest
complete round, discarding the half-written one and leaving earlier rounds' files untouched.

Stopping: a ``CANCEL`` file or SIGTERM/SIGINT is noticed at the next training step (or round
boundary) and ends in a ``cancelled`` event, exit code 3. Errors: a :class:`SparseSegError` (bad
job, missing input, out of memory twice, disk full) ends in an ``error`` event with message and hint,
exit code 2; anything else is a bug: traceback in ``worker.log``, an ``error`` event of kind
``internal``, exit code 1. Out of GPU memory is retried once with half the batch (half the patch when
the batch is already 1) from the last complete round, then reported with a hint to use the CPU.

This module imports torch only after the job has been validated (so a bad job fails in a fraction of
a second) and never imports Slicer, VTK or Qt.

Test hook: the environment variable ``SPARSESEG_TEST_FAULT`` injects faults at the first training
step, because out-of-memory and crashes cannot be produced on demand on a CPU-only machine:
``oom`` (every step raises ``torch.OutOfMemoryError``), ``oom-once`` (only the first step does) and
``bug`` (a RuntimeError). Never set it outside tests.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io as bytes_io
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import __version__
from .errors import SparseSegError
from .jobs import layout
from .jobs.atomic import atomic_write_bytes, atomic_write_json, fsync_file, is_disk_full, remove_temporaries, sha256_file
from .jobs.events import EventWriter, format_event
from .jobs.schema import JobSpec, read_job

FAULT_ENV = "SPARSESEG_TEST_FAULT"
FAULTS = ("oom", "oom-once", "bug")
CHECKPOINT_FORMAT = 1


def read_job_case(spec: JobSpec):
    """The job's case (image, annotation, annotated mask as the region says, class names and colours) and a
    description of the region; shared by the worker and Save model, which must see the same annotated mask."""
    from .case import Case
    from .io import read_annotation, read_image, read_label
    from .jobs.regions import annotated_mask

    image, geometry = read_image(spec.image)
    label, names, colors = read_annotation(spec.annotation, geometry)
    mask = read_label(spec.region["mask"], geometry) if spec.region["kind"] == "mask" else None
    annotated, description = annotated_mask(spec.region, label, geometry, mask)
    case = Case(spec.case_id, image, geometry, label, annotated, {**names, **spec.class_names()},
                {**colors, **spec.class_colors()})
    return case, description


class JobCancelled(Exception):
    """Raised when a stop was requested; the worker then writes a ``cancelled`` event."""


def _kind(error: SparseSegError, kind: str) -> SparseSegError:
    error.kind = kind  # type: ignore[attr-defined]
    return error


# --------------------------------------------------------------------------------------------------
# Stop requests, the job lock and the worker's own log


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


class EventReporter:
    """The methods' ``Reporter`` protocol as worker events (progress throttled to two a second)."""

    def __init__(self, events: EventWriter, rounds: int, interval_s: float = 0.5) -> None:
        self.events = events
        self.rounds = rounds
        self.round = 1
        self.interval_s = interval_s
        self._last = 0.0

    def progress(self, stage: str, step: int, total: int, loss: float, seconds_per_step: float) -> None:
        now = time.monotonic()
        if step < total and now - self._last < self.interval_s:
            return
        self._last = now
        self.events.emit("progress", round=self.round, rounds=self.rounds, step=step, total=total, loss=loss,
                         seconds_per_step=round(seconds_per_step, 4), eta_s=round((total - step) * seconds_per_step, 1),
                         stage=stage)

    def log(self, message: str) -> None:
        self.events.emit("log", message=message)

    def warning(self, message: str, hint: str) -> None:
        self.events.emit("warning", message=message, hint=hint)


# --------------------------------------------------------------------------------------------------
# Out of memory


def is_out_of_memory(error: BaseException) -> bool:
    """True when ``error`` is (or was raised while handling) a torch out-of-memory error."""
    import torch

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, torch.OutOfMemoryError):
            return True
        if isinstance(error, RuntimeError) and "out of memory" in str(error).lower() and "cuda" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


def reduce_memory(options, case_shape: tuple[int, int, int]):
    """``(options, description)`` with half the batch, or half the patch when the batch is already 1."""
    from .engine.networks import NetworkConfig, default_patch_size

    network = NetworkConfig.preset(options.network)
    batch = options.schedule(network.dims)["batch_size"]
    if batch > 1:
        return replace(options, batch_size=batch // 2), f"batch size {batch} -> {batch // 2}"
    patch = tuple(options.patch_size) if options.patch_size else default_patch_size(case_shape, network)
    multiple = network.size_multiple
    smaller = tuple(max(multiple, (p // 2) // multiple * multiple) for p in patch)
    return replace(options, patch_size=smaller), f"patch size {patch} -> {smaller}"


# --------------------------------------------------------------------------------------------------
# The worker


class Worker:
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
        from .annotation import check_annotation
        from .io import read_label

        try:
            case, description = read_job_case(spec)
            summary = check_annotation(case.label, case.annotated)
            reference = read_label(spec.reference, case.geometry) if spec.reference is not None else None
        except SparseSegError as error:
            raise _kind(error, "input")
        geometry = case.geometry
        classes = ", ".join(f"{v}: {n}" for v, n in sorted(summary.foreground_per_class.items()))
        self.events.emit("log", message=(
            f"annotation: {description}; {summary.annotated_voxels} annotated voxels "
            f"({100 * summary.fraction:.1f}% of {geometry.size[0]}x{geometry.size[1]}x{geometry.size[2]}), "
            f"foreground voxels per class {{{classes}}}"))
        return case, reference

    # -- resume ---------------------------------------------------------------------------------

    def resume_point(self, spec: JobSpec, resume: bool) -> int:
        """The newest complete round to continue after; removes leftovers of an interrupted round."""
        complete = layout.complete_rounds(self.jobdir)
        done = layout.last_complete_round(self.jobdir)
        if complete and not resume:
            raise _kind(SparseSegError(
                f"{self.jobdir} already holds {len(complete)} complete round(s) of an earlier run",
                f"Continue it with `sparseseg run --resume {self.jobdir}`, or give a new folder for a new job.",
            ), "user")
        if done and not layout.checkpoints(self.jobdir).get(done):
            raise _kind(SparseSegError(
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
            raise _kind(SparseSegError(f"cannot read the checkpoint {path}: {str(error).splitlines()[0][:160]}",
                                       "Start the job again in a new folder."), "user") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or payload.get("round") != index:
            raise _kind(SparseSegError(f"{path} is not a SparseSeg checkpoint of round {index}",
                                       "Start the job again in a new folder."), "user")
        return payload

    # -- rounds ---------------------------------------------------------------------------------

    def write_round(self, spec: JobSpec, case, reference, result, adjustments: dict, started: float) -> dict:
        """Write one round (files, checkpoint, round.json last) and emit its ``round`` event."""
        import numpy as np
        import torch

        from .io import write_image
        from .jobs.suggestion import SUGGESTION_KEY, normalized_entropy

        index = result.index
        folder = layout.round_dir(self.jobdir, index)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        prefix = f"{layout.ROUNDS_DIR}/{layout.round_name(index)}/"
        written: dict[str, str] = {}
        label = np.asarray(result.labels[case.case_id], dtype=np.uint8)
        write_image(label, case.geometry, folder / layout.LABEL_FILE)
        written["label"] = layout.LABEL_FILE
        probabilities = result.probabilities.get(case.case_id)
        uncertainty = result.uncertainty.get(case.case_id)
        if uncertainty is None and probabilities is not None:
            uncertainty = normalized_entropy(probabilities)
        training = {key: value for key, value in result.metrics.items() if key != SUGGESTION_KEY}
        suggestion = self.suggest(spec, case, label, uncertainty, result.metrics.get(SUGGESTION_KEY))
        if spec.parameters["save_probabilities"] and probabilities is not None:
            for value in range(1, probabilities.shape[0]):
                name = layout.probability_file(value)
                write_image(probabilities[value].astype(np.float32), case.geometry, folder / name)
                written[f"probability-{value}"] = name
        if spec.parameters["save_uncertainty"] and uncertainty is not None:
            write_image(np.asarray(uncertainty, dtype=np.float32), case.geometry, folder / layout.UNCERTAINTY_FILE)
            written["uncertainty"] = layout.UNCERTAINTY_FILE
        for name in written.values():
            fsync_file(folder / name)
        metrics = None
        if reference is not None:
            from .methods.common import class_names_of
            from .metrics import case_metrics

            metrics = case_metrics(label, reference, case.geometry.spacing_kji, class_names_of([case]))
        checkpoint = layout.checkpoint_path(self.jobdir, index)
        buffer = bytes_io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "round": index, "method": spec.method,
                    "adjustments": adjustments, "state": result.state}, buffer)
        atomic_write_bytes(checkpoint, buffer.getvalue())
        files = {key: prefix + name for key, name in written.items()}
        record = {
            "round": index,
            "rounds": result.total,
            "case_id": case.case_id,
            "files": files,
            "sha256": {key: sha256_file(folder / name) for key, name in written.items()},
            "geometry": {"size": list(case.geometry.size), "spacing": list(case.geometry.spacing),
                         "origin": list(case.geometry.origin), "direction": list(case.geometry.direction)},
            "classes": {str(v): n for v, n in sorted(case.class_names.items())},
            "metrics": metrics,
            "training": training,
            "checkpoint": f"{layout.CHECKPOINT_DIR}/{checkpoint.name}",
            "elapsed_s": round(time.perf_counter() - started, 3),
            **({SUGGESTION_KEY: suggestion} if suggestion else {}),
        }
        from .jobs.events import jsonable

        record = jsonable(record)
        atomic_write_json(folder / layout.ROUND_FILE, record)  # the commit point
        self.events.emit("round", round=index, rounds=result.total, files=files, metrics=metrics,
                         training=training, elapsed_s=record["elapsed_s"],
                         **({SUGGESTION_KEY: record[SUGGESTION_KEY]} if suggestion else {}))
        for older, path in layout.checkpoints(self.jobdir).items():
            if older < index:
                path.unlink(missing_ok=True)
        return record

    def suggest(self, spec: JobSpec, case, label, uncertainty, own) -> dict | None:
        """The round's "annotate next" slice (:mod:`.jobs.suggestion`): the method's ``own`` when it names a slice
        of the volume, else the least certain slice of ``uncertainty``; None without either (or with nothing
        left to annotate). Computed from the in-memory result, so it costs no file."""
        from .jobs.suggestion import method_suggestion, suggest_slice, suggestion_axis

        if case.annotated is None:  # a Case without a mask is annotated everywhere (Case.sparse_label)
            return None
        axis = suggestion_axis(spec.region, case.label, case.annotated)
        if axis is None:
            return None
        if own is not None:
            chosen = method_suggestion(own, axis, case.image.shape)
            if chosen is not None:
                return chosen
            self.events.emit("warning", message=f"the method's suggested slice {own!r} is not a slice of the volume "
                                                f"(shape {case.image.shape})",
                             hint="Ignored: the suggestion is computed from the round's uncertainty instead.")
        return suggest_slice(uncertainty, label, case.annotated, axis) if uncertainty is not None else None

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
            raise _kind(error, "user")
        if self.fault is not None and self.fault not in FAULTS:
            raise _kind(SparseSegError(f"{FAULT_ENV}={self.fault!r} is not a known fault", f"Use one of {FAULTS}."), "user")
        done = self.resume_point(spec, resume)
        self.events.emit("started", pid=os.getpid(), method=spec.method, rounds=spec.rounds, resume_from=done,
                         device=spec.device, version=__version__, python=sys.executable)
        if spec.rounds is not None and done >= spec.rounds:
            return self.finish(spec, done, note="nothing to resume: every round is complete")
        case, reference = self.load_case(spec)
        if self.stop():
            raise JobCancelled()

        import torch  # noqa: F401  (the heavy part starts here)

        from .engine.device import describe_device, select_device
        from .methods import get_method
        from .methods.base import MethodOptions, iter_rounds, planned_rounds

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
        state, adjustments = None, {}
        if done:
            payload = self.load_checkpoint(done)
            state, adjustments = payload["state"], dict(payload.get("adjustments") or {})
            if adjustments:
                options = replace(options, **{k: (tuple(v) if k == "patch_size" and v else v) for k, v in adjustments.items()})
                self.events.emit("log", message=f"resuming with the reduced settings of an earlier retry: {adjustments}")
        rounds = planned_rounds(method, case, options, state)
        if spec.rounds is None:
            if done >= rounds:
                return self.finish(spec, done, note="nothing to resume: every round is complete")
            options = replace(options, rounds=rounds)
            self.events.emit("log", message=f"{spec.method} plans {rounds - done} round(s) (rounds {done + 1}-{rounds})")
        reporter = EventReporter(self.events, rounds)
        reporter.round = done + 1
        retried = False
        while True:
            try:
                for result in iter_rounds(method, [case], options, reporter, state=state, should_stop=self.should_stop):
                    self.write_round(spec, case, reference, result, adjustments, started)
                    state, done = result.state, result.index
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
                    raise _kind(SparseSegError(
                        f"out of GPU memory in round {done + 1}, even after retrying with smaller settings",
                        "Run on the CPU instead (job.json \"device\": \"cpu\", or --device cpu; slower but not "
                        "limited by GPU memory), close other programs using the GPU, or lower parameters.patch_size.",
                    ), "oom") from None
                retried = True
                options, change = reduce_memory(options, case.image.shape)
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


if __name__ == "__main__":
    sys.exit(main())
