"""Start from ROI boxes: a user who boxes parts of the structure instead of painting a slice.

The module's *Annotated region: boxes* (and ``sparseseg run --region boxes``): every voxel inside a box is
annotated, object and background. On each scan of a data set's ``dev`` or ``report`` part (the interactive
benchmark's seeded order, :mod:`.interactive.scans`) the simulated user places ``--boxes N`` cubes of edge
``--box-size F`` times the object's largest extent (mm), centred on the object in the slices at (n + 1) / (N + 1)
of its extent along k, and paints the object inside them. The exact Start job (the module's defaults, region
boxes) runs as a real worker process; every streamed round is scored against the full reference (class mean and
merged Dice, HD95, RAVD) next to the boxes' paint alone, which the user has without pressing Start; with
``--corrections N`` the user then paints the suggested whole slice and Continues, N times::

    python -m SparseSegLib.benchmarks.box_start --dataset ../shared/data/hippocampus [--split dev|report] \\
        [--cases 5] [--skip 0] [--boxes 3] [--box-size 0.33] [--corrections 0] [--threads 1] [--option KEY=VALUE] \
        [--out DIR]

Prints one line per scan and a table (mean +- sd per round); writes ``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import SparseSegError
from ..jobs.atomic import atomic_write_json
from ..jobs.client import Job
from ..jobs.continuation import continue_job, paste_slices
from ..jobs.regions import boxes_mask
from .interactive.cli import job_settings
from .interactive.next_slice import choose_next
from .interactive.scans import DATA_ROOT, SPLITS, Scan, choose_scans
from .interactive.scoring import score
from .interactive.user import PlaySettings, watch


def user_boxes(reference: np.ndarray, spacing_kji, count: int, fraction: float) -> list[tuple[tuple[int, ...], ...]]:
    """``count`` boxes ``(low, high)`` (inclusive ``(k, j, i)`` corners) of edge ``fraction`` of the object's largest
    extent in mm (at least 3 voxels per axis), centred on the object in the slices at (n + 1) / (count + 1) of its
    extent along k, clipped to the volume."""
    foreground = reference > 0
    if not foreground.any():
        raise SparseSegError("the reference holds no object", "Leave this scan out.")
    spacing = np.asarray(spacing_kji, float)
    where = np.argwhere(foreground)
    extent_mm = (where.max(0) - where.min(0) + 1) * spacing
    edge = np.maximum(3, np.round(fraction * extent_mm.max() / spacing)).astype(int)
    first, last = int(where[:, 0].min()), int(where[:, 0].max())
    shape = np.asarray(reference.shape)
    boxes = []
    for n in range(count):
        k = int(round(first + (n + 1) / (count + 1) * (last - first)))
        while not foreground[k].any():  # a gap in the object's extent: the nearest slice that holds it
            k += 1 if k < (first + last) / 2 else -1
        j, i = np.argwhere(foreground[k]).mean(0)
        low = np.clip(np.round(np.array([k, j, i]) - edge / 2).astype(int), 0, shape - 1)
        high = np.minimum(shape - 1, low + edge - 1)
        boxes.append((tuple(int(v) for v in low), tuple(int(v) for v in high)))
    return boxes


def region_of(boxes) -> dict:
    """The job's region as the module writes it (voxel corners in (i, j, k) order, inclusive)."""
    return {"kind": "boxes", "boxes": [{"ijk": [list(low[::-1]), list(high[::-1])]} for low, high in boxes]}


def play(scan: Scan, method: str, parameters: dict, settings: PlaySettings, count: int, fraction: float,
         folder: Path, corrections: int = 0) -> dict:
    """One scan: box, Start, watch, score every round, then ``corrections`` times paint the suggested whole slice
    and Continue (the module's path, :func:`~SparseSegLib.jobs.continuation.continue_job`), scoring each stage's
    last round; the record for results.json."""
    case = scan.load()
    reference, spacing, classes = case.label, case.geometry.spacing_kji, dict(case.class_names)
    boxes = user_boxes(reference, spacing, count, fraction)
    mask = boxes_mask(region_of(boxes)["boxes"], case.geometry)  # what the job will read as annotated
    painted = np.where(mask, reference, 0).astype(reference.dtype)
    if folder.exists():
        shutil.rmtree(folder)
    pressed = time.perf_counter()
    job = Job.create(folder / "stage-1", case.image, case.geometry, painted, method, region=region_of(boxes),
                     classes={v: {"name": n} for v, n in classes.items()}, parameters=parameters,
                     device=settings.device, seed=0, case_id=scan.case_id)
    watched = watch(job, pressed, settings, resume=False)
    rounds = [{**entry, "scores": score(job.load_round(entry["round"], probabilities=False).label, reference, spacing,
                                        classes)} for entry in watched["rounds"]]
    inside = float((mask & (reference > 0)).sum() / max(1, (reference > 0).sum()))
    record = {**scan.describe(), "boxes": [list(map(list, b)) for b in boxes], "object_inside_boxes": round(inside, 4),
              "status": watched["status"], "message": watched["message"], "rounds": rounds,
              "paint_alone": score(painted, reference, spacing, classes), "corrections": []}
    label = painted
    while record["status"] == "finished" and len(record["corrections"]) < corrections:
        current = job.load_round(None, probabilities=False)
        choice = choose_next("suggested", current.label, current.record, reference, mask, 0)
        label, mask = paste_slices(label, mask, reference, choice.axis, [choice.index])
        pressed = time.perf_counter()
        job = continue_job(job.directory, folder / f"stage-{len(record['corrections']) + 2}", label, mask)
        watched = watch(job, pressed, settings, resume=True)
        record["status"], record["message"] = watched["status"], watched["message"]
        final = (score(job.load_round(watched["rounds"][-1]["round"], probabilities=False).label, reference, spacing,
                       classes) if watched["status"] == "finished" and watched["rounds"] else None)
        record["corrections"].append({**choice.as_dict(), "final_s": watched["rounds"][-1]["seen_s"]
                                      if watched["rounds"] else None, "scores": final})
    return record


def _figure(scores: dict) -> tuple[float, float | None, float]:
    merged = scores.get("merged", {}).get("dice")
    return scores["dice"], merged, scores["ravd"]


def table(records: list[dict]) -> str:
    """Mean +- sd over the finished scans: the boxes' paint alone, then each streamed round."""
    done = [r for r in records if r["status"] == "finished" and r["rounds"]]
    if not done:
        return "no finished scan"
    rows = [("boxes' paint alone", [_figure(r["paint_alone"]) for r in done], None)]
    for index in range(len(done[0]["rounds"])):
        rows.append((f"round {index + 1}", [_figure(r["rounds"][index]["scores"]) for r in done],
                     [r["rounds"][index]["seen_s"] for r in done]))
    scored = min(next((i for i, c in enumerate(r["corrections"]) if not c["scores"]), len(r["corrections"]))
                 for r in done)  # a stage that streamed no round (it failed, or planned none) ends the rows
    for index in range(scored):
        rows.append((f"+ {index + 1} suggested slice{'s' if index else ''}",
                     [_figure(r["corrections"][index]["scores"]) for r in done],
                     [r["corrections"][index]["final_s"] for r in done]))
    lines = [f"{len(done)} scans, object inside the boxes {np.mean([r['object_inside_boxes'] for r in done]):.2f} "
             "(mean)", "| | Dice (class mean) | merged | RAVD mean / max | seen after (s, mean) |", "|---|---|---|---|---|"]
    for name, figures, seconds in rows:
        dice, merged, ravd = (np.array([f[i] for f in figures], dtype=float) for i in range(3))
        merged_text = "" if np.isnan(merged).all() else f"{np.nanmean(merged):.3f}"
        lines.append(f"| {name} | {dice.mean():.3f} ± {dice.std():.3f} | {merged_text} | {ravd.mean():+.2f} / "
                     f"{ravd.max():+.2f} | {'' if seconds is None else f'{np.mean(seconds):.0f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.box_start",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA_ROOT / "hippocampus", help="MSD-style folder")
    parser.add_argument("--split", choices=SPLITS, default="report")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N scans of the part")
    parser.add_argument("--boxes", type=int, default=3, help="boxes per scan (default 3)")
    parser.add_argument("--box-size", type=float, default=0.33,
                        help="box edge as a fraction of the object's largest extent (default 0.33)")
    parser.add_argument("--corrections", type=int, default=0,
                        help="then paint the suggested whole slice and Continue, this many times (default 0)")
    parser.add_argument("--method", default=None,
                        help="another method than the Start default's (its options with --option)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-output/box-start"))
    args = parser.parse_args(argv)
    try:
        method, parameters, source = job_settings(args.method, args.option, args.parameter)
        scans = choose_scans(args.dataset, args.split, args.cases + args.skip)[args.skip:]
    except SparseSegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = PlaySettings(method=method, parameters=parameters, device=args.device, threads=args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(scans)} scans, {args.boxes} boxes of {args.box_size:g} x the object's extent; job: {source}")
    records = []
    for scan in scans:
        record = play(scan, method, parameters, settings, args.boxes, args.box_size, args.out / scan.case_id,
                      args.corrections)
        records.append(record)
        atomic_write_json(args.out / "results.json", {"command": " ".join(sys.argv), "source": source,
                                                      "scans": records})
        figures = " -> ".join(f"{r['scores']['dice']:.3f}" for r in record["rounds"] + record["corrections"]
                              if r["scores"])
        print(f"[{scan.key}] {record['status']}: paint alone {record['paint_alone']['dice']:.3f}, rounds {figures}",
              flush=True)
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
