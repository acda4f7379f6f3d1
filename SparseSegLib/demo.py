"""``sparseseg demo``: what a user gets when they press Start in the Slicer module, on bundled sample scans.

Why it plays the single-scan path: that is what the module is for and what a user meets first (issue 19); the
earlier demo trained a cohort Gradual Learning model on all 12 sample volumes, which no Start button does. For
each scan (by default the first :data:`DEFAULT_CASES` of the bundled hippocampus MRI) the demo plays the module's
user by the interactive benchmark's rules (:mod:`SparseSegLib.benchmarks.interactive`), so the two cannot drift:

1. **paint** the object's central slice along k as a whole: every class and the background of that slice;
2. **Start**: the job the module creates (:meth:`Job.create` with painted slices, axis auto, the data set's class
   names and colours, and the Start defaults of :mod:`SparseSegLib.defaults`; ``--method`` / ``--option`` /
   ``--parameter`` override them), run by a real worker process; each streamed round is printed as
   ``sparseseg run`` prints it, with its Dice against the full reference label;
3. **one correction**, as the module's Continue: paint the slice the last round suggests (``round.json``
   ``suggested_slice``; without a usable one, the middle of the largest unpainted gap of the object's extent)
   with its reference label, then :func:`~SparseSegLib.jobs.continuation.continue_job` and
   ``start(resume=True)``, printing its rounds.

It writes, in ``--out``: ``jobs/<case>/stage-1, stage-2`` (the job folders, as the module keeps them; each
stage's checkpoint replaces the earlier demo's model folder, since a Start job trains no cohort model),
``labels/<case>.nii.gz`` and ``segmentations/<case>.seg.nrrd`` (the final result on the input geometry),
``metrics.md`` / ``metrics.json`` (every stage scored) and ``picture.png`` (:mod:`.visualize`). Scoring runs
in this process while the worker trains; on the small sample scans it takes a fraction of a second per round.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .case import Case
from .dataset import CaseRef, Dataset, load_dataset
from .errors import SparseSegError
from .jobs.client import Job
from .jobs.events import format_event
from .metrics import MEAN, MERGED, case_metrics
from .progress import format_duration

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "hippocampus"
#: Scans the demo plays by default: enough to see the spread, a minute or two on a laptop CPU.
DEFAULT_CASES = 3
#: The sub-folders and files a demo writes in ``--out``; an earlier demo's are replaced.
OUTPUTS = ("jobs", "labels", "segmentations", "metrics.md", "metrics.json", "picture.png")
#: What the cohort demo wrote before the single-scan one; removed with the rest so no stale model is left.
OLD_OUTPUTS = ("model", "rounds.md", "rounds.png")
_POLL_S = 0.2

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


def start_settings(method: str | None = None, options: list[str] | None = None,
                   parameters: list[str] | None = None) -> tuple[str, dict, str]:
    """``(method, job.json parameters, where they come from)``: the Start defaults with the overrides, checked
    (job schema, method name and method options) before any scan is loaded."""
    from .benchmarks.interactive.cli import job_settings
    from .methods import get_method
    from .methods.base import MethodOptions

    method, chosen, source = job_settings(method, list(options or []), list(parameters or []))
    checker = getattr(get_method(method), "check_options", None)
    if checker is not None:
        checker(MethodOptions(extra=dict(chosen.get("method_options") or {})))
    return method, chosen, source


def prepare_output(out: Path) -> Path:
    """Make ``out`` ready: an empty or new folder, or one an earlier demo wrote (its outputs are removed, so
    no job folder clashes and no stale label map of a scan not played this time is left). Any other non-empty
    folder is refused, so ``--out .`` never deletes a project's files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SparseSegError(f"--out {out} is a file", "Give a folder for the demo's output.")
    if out.is_dir() and any(out.iterdir()):
        ours = {*OUTPUTS, *OLD_OUTPUTS}
        metrics = out / "metrics.md"
        if not metrics.is_file() or not metrics.read_text(errors="replace").startswith("# SparseSeg demo"):
            raise SparseSegError(f"--out {out} holds files that an earlier demo did not write",
                                 "Give a new or empty folder, or the folder of an earlier demo (default demo-output).")
        for name in ours:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def choose_cases(dataset_dir: Path, cases: int | None, channel: int | str | None = None) -> tuple[Dataset, list[CaseRef]]:
    """The first ``cases`` labelled scans of the data set in ``dataset.json`` order (all of them for None), read
    with ``channel`` where the images have several."""
    if cases is not None and cases < 1:
        raise SparseSegError(f"--cases {cases} plays no scan", "Give --cases 1 or more, or --cases all.")
    dataset = load_dataset(dataset_dir, channel)
    refs = [ref for ref in dataset.cases if ref.label is not None]
    if not refs:
        raise SparseSegError(f"{dataset_dir} has no labelled scan",
                             "The demo paints from the reference labels and scores against them.")
    return dataset, refs[:cases] if cases is not None else refs


def describe_scores(metrics: dict, class_names: dict[int, str]) -> str:
    """``Dice 0.812 (Anterior 0.80, Posterior 0.83; merged 0.86), HD95 2.2 mm, RAVD -0.05``: the classes' mean
    first (a class the result misses counts), then each class and all classes as one."""
    mean = metrics[MEAN]
    classes = ", ".join(f"{class_names[v]} {metrics[class_names[v]]['dice']:.2f}" for v in sorted(class_names))
    merged = f"; merged {metrics[MERGED]['dice']:.2f}" if MERGED in metrics else ""
    return (f"Dice {mean['dice']:.3f}" + (f" ({classes}{merged})" if len(class_names) > 1 else "")
            + f", HD95 {mean['hd95']:.1f} mm, RAVD {mean['ravd']:+.2f}")


class Stage:
    """One pressed button (Start or Continue) on one scan: its job, what was painted, its scored rounds."""

    def __init__(self, number: int, job: Job, painted: list[dict]) -> None:
        self.number, self.job, self.painted = number, job, painted
        self.rounds: list[dict] = []
        self.status, self.message = "running", None
        self.label: np.ndarray | None = None
        self.metrics: dict | None = None

    @property
    def name(self) -> str:
        return "Start" if self.number == 1 else f"correction {self.number - 1}"

    def record(self) -> dict:
        """Everything but the label map, for metrics.json."""
        return {"stage": self.number, "name": self.name, "job": str(self.job.directory), "painted": self.painted,
                "status": self.status, "message": self.message, "rounds": self.rounds, "final": self.metrics}


def watch(stage: Stage, case: Case, resume: bool, device: str, log: Log) -> Stage:
    """Start the stage's worker and poll it as the module's timer does: print its events (``sparseseg run``'s
    lines; progress at every quarter of a round), score each round as it arrives. Ctrl-C stops the worker,
    which runs in its own process group and so would not see it."""
    job, classes = stage.job, dict(case.class_names)
    env = {"SPARSESEG_SESSION": "demo", **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    prefix, shown = f"[{case.case_id} {stage.name}]", set()
    pressed = time.perf_counter()

    def echo(event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            quarter = (event.get("round"), int(4 * int(event.get("step") or 0) / max(int(event.get("total") or 1), 1)))
            if quarter in shown:
                return
            shown.add(quarter)
        text = format_event(event)
        if kind == "round":
            data = job.load_round(int(event["round"]), probabilities=False)
            metrics = case_metrics(data.label, case.label, case.geometry.spacing_kji, classes)
            seen = time.perf_counter() - pressed
            stage.rounds.append({"round": int(event["round"]), "seen_s": round(seen, 2), "metrics": metrics,
                                 "suggested_slice": data.record.get("suggested_slice")})
            stage.label, stage.metrics = data.label, metrics
            text += f"\n{prefix}   -> {describe_scores(metrics, classes)} ({seen:.0f} s after the button)"
        log(f"{prefix} {text}")

    job.start(env=env, resume=resume)
    try:
        while job.is_running():
            for event in job.poll():
                echo(event)
            time.sleep(_POLL_S)
        while not job.reader.caught_up():
            for event in job.poll():
                echo(event)
        for event in job.poll():
            echo(event)
        outcome = job.wait(timeout=30)
    except BaseException:  # Ctrl-C (or a scoring error): never leave a worker training in the background
        job.cancel(grace_s=2.0, term_grace_s=3.0, block=True)
        raise
    stage.status = outcome.status
    if outcome.status != "finished":
        raise SparseSegError(f"{case.case_id}: the {stage.name} job did not finish: {outcome.message}",
                             f"See {job.directory / 'worker.log'} and worker-output.log.")
    return stage


def play_scan(case: Case, folder: Path, method: str, parameters: dict, device: str, seed: int,
              log: Log = _print) -> tuple[list[Stage], np.ndarray]:
    """Paint the central slice, Start, correct one slice and Continue (see module doc) in ``folder``; returns
    the two :class:`Stage` s and the mask of Start's paint."""
    from .benchmarks.interactive.baselines import painted_label
    from .benchmarks.interactive.next_slice import suggested_slice
    from .benchmarks.interactive.scans import central_slice
    from .jobs.continuation import continue_job, paste_slices
    from .visualize import default_class_colors

    reference = case.label
    if reference is None or not np.any(reference > 0):
        raise SparseSegError(f"{case.case_id} has no foreground in its reference label", "Leave this scan out.")
    k = central_slice(reference)
    label, mask = painted_label(reference, [k]), np.zeros(reference.shape, bool)
    mask[k] = True
    colors = case.class_colors or default_class_colors(case.class_names)
    classes = {v: {"name": n, "color": list(colors[v])} for v, n in sorted(case.class_names.items())}
    log(f"[{case.case_id}] painted slice k={k} (the middle of the object's extent), every voxel of it; Start")
    missing = [name for value, name in sorted(case.class_names.items()) if not np.any(label[k] == value)]
    if missing:
        log(f"[{case.case_id}] note: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on the painted "
            "slice, so Start cannot find it (a user would paint it on another slice and Continue)")
    job = Job.create(folder / "stage-1", case.image, case.geometry, label, method,
                     region={"kind": "slices", "axis": "auto"}, classes=classes, parameters=parameters,
                     device=device, seed=seed, case_id=case.case_id)
    start = watch(Stage(1, job, [{"axis": 0, "index": k, "source": "central"}]), case, False, device, log)
    if start.label is None:
        raise SparseSegError(f"{case.case_id}: Start streamed no round", f"See {job.directory / 'worker.log'}.")

    current = job.load_round(None, probabilities=False)
    choice = suggested_slice(current.record, reference, mask)
    new_label, new_mask = paste_slices(label, mask, reference, choice.axis, [choice.index])
    why = "the slice the last round suggests" if choice.source == "suggested" else f"fallback: {choice.note}"
    log(f"[{case.case_id}] correction: painted slice {'kji'[choice.axis]}={choice.index} ({why}); Continue")
    follow = continue_job(job.directory, folder / "stage-2", new_label, new_mask)
    correction = Stage(2, follow, start.painted + [choice.as_dict()])
    done = len(start.rounds)
    watch(correction, case, True, device, log)
    if not correction.rounds:  # the method planned no round for the new slice: the result stays Start's
        correction.message = f"the method planned no round after round {done}; the result is Start's"
        log(f"[{case.case_id}] warning: {correction.message}")
        correction.label, correction.metrics = start.label, start.metrics
    return [start, correction], mask


def run_demo(out: Path, dataset_dir: Path = SAMPLE_DATA, cases: int | None = DEFAULT_CASES, method: str | None = None,
             options: list[str] | None = None, parameters: list[str] | None = None, device: str = "auto",
             seed: int = 0, log: Log = _print, channel: int | str | None = None) -> dict[str, Path]:
    """Play Start and one correction on the first ``cases`` scans (see module doc); returns the paths written."""
    from .demo_report import write_outputs
    from .visualize import default_class_colors

    started = time.perf_counter()
    method, chosen, source = start_settings(method, options, parameters)
    dataset, refs = choose_cases(Path(dataset_dir), cases, channel)
    out = prepare_output(Path(out))
    if note := dataset.channel_note():
        log(f"note: {note}")
    log(f"demo: {len(refs)} scan(s) of {dataset.name} ({dataset.root}); Start runs `{method}` with {source} "
        f"(job parameters {chosen})")
    played = []
    for ref in refs:
        case = dataset.load(ref)
        case = Case(case.case_id, case.image, case.geometry, case.label, None, dict(case.class_names),
                    case.class_colors or default_class_colors(case.class_names))
        stages, mask = play_scan(case, out / "jobs" / case.case_id, method, chosen, device, seed, log)
        played.append((case.with_annotation(mask), stages))
        log(f"[{case.case_id}] after Start: {describe_scores(stages[0].metrics, case.class_names)}; after the "
            f"correction: {describe_scores(stages[1].metrics, case.class_names)}")
    written = write_outputs(out, played, {"method": method, "parameters": chosen, "source": source,
                                          "dataset": str(dataset.root), "device": device, "seed": seed})
    for name, number in (("Start", 0), ("the correction", 1)):
        text = []
        for group, what in ((MEAN, "mean of the classes"), (MERGED, "merged")):
            dice = [stages[number].metrics[group]["dice"] for _, stages in played if group in stages[number].metrics]
            if dice:
                text.append(f"{np.mean(dice):.3f}" + (f" ± {np.std(dice, ddof=1):.3f}" if len(dice) > 1 else "")
                            + f" ({what})")
        log(f"mean Dice over {len(played)} scan(s) after {name}: {', '.join(text)}")
    log(f"demo done in {format_duration(time.perf_counter() - started)}")
    return written
