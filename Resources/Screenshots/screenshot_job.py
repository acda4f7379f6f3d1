"""The screenshot's content, read from one real worker job: the round, the slice, the colours and the panel's state.

Kept apart from the rendering so that what the picture *shows* (taken from the job's files and the session's own
code, never made up) can be read and checked without Qt or VTK: ``make_screenshot.py`` hands the result to
``screenshot_panel`` and ``screenshot_slice_view``. SparseSegLib is imported inside the functions because the
caller puts the repository root on ``sys.path`` first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np


@dataclass
class ShownJob:
    """Everything both halves of the screenshot need, so neither reads the job folder itself."""

    job: Path
    shown_round: int
    image: np.ndarray  #: the input volume, ``(k, j, i)``
    label: np.ndarray  #: the shown round's label map, same grid
    ijk_to_ras: np.ndarray  #: 4x4
    colors: dict[int, tuple[float, float, float]]  #: label value -> RGB in 0..1
    slice_k: int  #: the axial voxel slice the view shows
    state: dict  #: :func:`module_state` plus the suggested slice appended to ``state["text"]``
    volume_name: str
    node_names: dict[str, str | None]  #: node selector object name -> the node's name (None: empty)
    method: str


def newest_round(job: Path) -> int:
    """The newest round with a label map; a job without one cannot be pictured, so this stops with a message."""
    rounds = sorted(int(p.name) for p in (job / "rounds").iterdir() if p.name.isdigit() and (p / "label.nrrd").is_file())
    if not rounds:
        raise SystemExit(f"{job}: no rounds/NNN/label.nrrd (run the job first)")
    return rounds[-1]


def module_state(job: Path, shown_round: int) -> dict:
    """The module's status line, progress and log at the moment round ``shown_round`` was imported and the next
    round trained (the latest progress event before the next round, if there is one), from the real events."""
    from SparseSegLib.jobs.events import format_event, read_events
    from SparseSegLib.session.session import Session

    events = read_events(job / "events.jsonl")
    cut = next((n for n, e in enumerate(events) if e.get("event") == "round" and e.get("round") == shown_round), None)
    if cut is None:
        raise SystemExit(f"{job}: events.jsonl has no round {shown_round}")
    later = events[cut + 1:]
    following = next((n for n, e in enumerate(later) if e.get("event") in ("round", "finished", "cancelled", "error")),
                     len(later))
    progress = [e for e in later[:following] if e.get("event") == "progress"]
    last_progress = progress[len(progress) // 2] if progress else None  # mid-way through the next round
    seen = events[:cut + 1] + [e for e in later[:following] if e.get("event") != "progress"
                               and (last_progress is None or e["seq"] < last_progress["seq"])]
    planned = max((int(e["rounds"]) for e in seen + ([last_progress] if last_progress else []) if e.get("rounds")),
                  default=shown_round)
    imported = [int(e["round"]) for e in seen if e.get("event") == "round"]
    status = "running" if last_progress else next(
        (e["event"] for e in reversed(events) if e.get("event") in ("finished", "cancelled", "error")), "running")
    # Session.progress itself, on the attributes it reads
    view = SimpleNamespace(job=True, last_progress=last_progress, imported_rounds=imported, status=status,
                           pending_rounds=[], planned_rounds=lambda: planned)
    fraction, text = Session.progress(view)
    log = [format_event(e) for e in seen if e.get("event") != "progress"]
    return {"fraction": fraction, "text": text, "log": log, "running": status == "running",
            "round_event": events[cut]}


def suggestion_text(round_event: dict, ras_matrix: np.ndarray, shape: tuple[int, ...]) -> str:
    """The "; annotate next: ..." tail that ``SparseSegWidget.showProgress`` adds to the status line, made by the
    same ``annotate_next.locate`` so the picture cannot show a wording the module would not."""
    from SparseSegLib.jobs.suggestion import SuggestedSlice
    from SparseSegLib.session import annotate_next

    suggested = SuggestedSlice.from_record(round_event)
    if suggested is None:
        return ""
    located = annotate_next.locate(suggested, ras_matrix, shape, np.eye(4))
    return "; annotate next: {slice}".format(slice=located.describe())  # SparseSegWidget.showProgress


def class_colors(spec: dict, label: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """The job's class colours, with the library's defaults for classes that name none (as the module shows them)."""
    from SparseSegLib.visualize import default_class_colors

    classes = spec.get("classes") or {}
    defaults = default_class_colors(range(1, int(label.max()) + 1))
    colors = {int(v): tuple(c.get("color") or defaults.get(int(v), (1.0, 1.0, 0.0))) for v, c in classes.items()}
    for value, color in defaults.items():
        colors.setdefault(value, color)
    return colors


def busiest_unannotated_slice(job: Path, spec: dict, label: np.ndarray, geometry) -> int:
    """The axial slice with the most result that the user did not annotate: a slice the network filled in is what
    the picture should show, not one the user drew."""
    from SparseSegLib.io import read_label

    annotated = np.zeros(label.shape[0], dtype=bool)
    mask_path = (spec.get("region") or {}).get("mask")
    if mask_path and (job / mask_path).is_file():
        mask = read_label(job / mask_path, geometry)
        annotated = mask.reshape(mask.shape[0], -1).all(axis=1)
    counts = (label > 0).reshape(label.shape[0], -1).sum(axis=1).astype(float)
    counts[annotated] = -1
    return int(np.argmax(counts))


def load_shown_job(job: Path, shown_round: int | None, slice_k: int | None, volume_name: str | None) -> ShownJob:
    """Read the job folder once. ``shown_round`` defaults to the one before the newest (so the panel shows the next
    round training), ``slice_k`` to :func:`busiest_unannotated_slice`, ``volume_name`` to the job's case id."""
    from SparseSegLib.io import read_image, read_label

    job = job.resolve()
    spec = json.loads((job / "job.json").read_text())
    rounds = sorted(int(p.name) for p in (job / "rounds").iterdir() if p.name.isdigit())
    shown = shown_round if shown_round is not None else (rounds[-2] if len(rounds) > 1 else newest_round(job))
    image, geometry = read_image(job / spec["inputs"]["image"])
    label = read_label(job / "rounds" / f"{shown:03d}" / "label.nrrd", geometry)
    colors = class_colors(spec, label)
    ras = geometry.ijk_to_ras()
    if slice_k is None:
        slice_k = busiest_unannotated_slice(job, spec, label, geometry)

    state = module_state(job, shown)
    state["text"] += suggestion_text(state["round_event"], ras, image.shape)
    name = volume_name or spec.get("case_id") or "Volume"
    nodes = {"inputVolumeSelector": name, "annotationSelector": f"{name} annotation",
             "resultSelector": f"{name} SparseSeg", "uncertaintySelector": None, "applyVolumeSelector": None}
    return ShownJob(job=job, shown_round=shown, image=image, label=label, ijk_to_ras=ras, colors=colors,
                    slice_k=slice_k, state=state, volume_name=name, node_names=nodes,
                    method=spec.get("method", "propagate"))
