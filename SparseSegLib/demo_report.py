"""What ``sparseseg demo`` leaves behind (see :mod:`.demo`): label maps, Slicer segmentations, the metrics of
every stage and the picture, from the scans it played.

Why a separate module: the demo's playing (jobs, workers, events) and its reporting (files a person opens)
change for different reasons; each stays small.
"""

from __future__ import annotations

import json
from pathlib import Path

from .io import write_image, write_segmentation
from .jobs.events import jsonable
from .metrics import MEAN, MERGED, format_table

#: Scans drawn in picture.png (the first ones played): more would make it too tall to read.
PICTURE_SCANS = 3


def _painted_text(painted: list[dict]) -> str:
    return ", ".join(f"{'kji'[p['axis']]}={p['index']}" + ("" if p["source"] == "central" else f" ({p['source']})")
                     for p in painted)


def _dice_text(metrics: dict) -> str:
    return f"{metrics[MEAN]['dice']:.2f}" + (f" (merged {metrics[MERGED]['dice']:.2f})" if MERGED in metrics else "")


def summary_table(played: list) -> str:
    """One row per scan and stage: painted slices, rounds, time to the first and final round, and the
    classes' mean Dice / HD95 / RAVD of the stage's final round."""
    merged = any(MERGED in stage.metrics for _, stages in played for stage in stages)
    rows = ["| Scan | Stage | Painted slices | Rounds | First result (s) | Final result (s) | Dice "
            + ("| Dice (merged) " if merged else "") + "| HD95 (mm) | RAVD |",
            "|---|---|---|---:|---:|---:|---:|" + ("---:|" if merged else "") + "---:|---:|"]
    for case, stages in played:
        for stage in stages:
            mean = stage.metrics[MEAN]
            rounds = ", ".join(str(r["round"]) for r in stage.rounds) or "none (the result stays the last stage's)"
            first = f"{stage.rounds[0]['seen_s']:.0f}" if stage.rounds else "-"
            final = f"{stage.rounds[-1]['seen_s']:.0f}" if stage.rounds else "-"
            both = f"{stage.metrics[MERGED]['dice']:.3f} | " if MERGED in stage.metrics else ("- | " if merged else "")
            rows.append(f"| {case.case_id} | {stage.name} | {_painted_text(stage.painted)} | {rounds} | {first} | "
                        f"{final} | {mean['dice']:.3f} | {both}{mean['hd95']:.2f} | {mean['ravd']:+.3f} |")
    return "\n".join(rows)


def metrics_markdown(played: list, job: dict) -> str:
    """``metrics.md``: how the scans were played, the summary table, then every metric per stage for the
    classes' mean, the merged foreground and each class (:func:`~SparseSegLib.metrics.format_table`)."""
    class_names = played[0][0].class_names
    groups = [MEAN] + ([MERGED] if len(class_names) > 1 else []) + [class_names[v] for v in sorted(class_names)]
    lines = ["# SparseSeg demo: what Start gives, and one correction", "",
             f"{len(played)} scan(s) of `{job['dataset']}`, each played as the Slicer module's user: the object's "
             "central slice along k painted whole (every class and the background), **Start** with "
             f"{job['source']} (method `{job['method']}`, job parameters `{json.dumps(job['parameters'])}`), then "
             "one **correction**: the slice the last round suggests (`suggested_slice` of its round.json; without "
             "one, the middle of the largest unpainted gap of the object's extent) painted with its reference "
             "label, and Continue. Each stage's final round is scored against the full reference label: Dice, "
             "HD95 and RAVD are the mean over the classes (a class the result misses scores 0), Dice (merged) "
             "takes all classes as one (HD95/ASSD in mm; RAVD signed, + = too large). Times "
             "are seconds from the button to the round's arrival. Job folders: `jobs/<scan>/stage-N`.", "",
             "## Summary", "", summary_table(played), ""]
    for number in range(max(len(stages) for _, stages in played)):
        per_case = {case.case_id: stages[number].metrics for case, stages in played if len(stages) > number}
        name = played[0][1][number].name
        lines += [f"## After {name}", ""]
        for group in groups:
            title = {MEAN: "mean of the classes", MERGED: "merged (all classes as one)"}.get(group, group)
            lines += [f"### {title}", "", format_table(per_case, group=group), ""]
    return "\n".join(lines)


def write_outputs(out: Path, played: list, job: dict) -> dict[str, Path]:
    """Write the demo's files in ``out`` from ``played`` (``(case, stages)`` per scan, ``case.annotated`` the
    Start paint); returns them by kind, as the CLI lists them."""
    from .visualize import ScanPicture, save_scans_picture

    written: dict[str, Path] = {"jobs": out / "jobs", "labels": out / "labels", "segmentations": out / "segmentations"}
    for case, stages in played:
        final = stages[-1].label
        write_image(final, case.geometry, written["labels"] / f"{case.case_id}.nii.gz")
        write_segmentation(final, case.geometry, written["segmentations"] / f"{case.case_id}.seg.nrrd",
                           case.class_names, case.class_colors)
    written["metrics"] = out / "metrics.md"
    written["metrics"].write_text(metrics_markdown(played, job) + "\n")
    written["metrics json"] = out / "metrics.json"
    record = {"job": job, "scans": {case.case_id: [stage.record() for stage in stages] for case, stages in played}}
    written["metrics json"].write_text(json.dumps(jsonable(record), indent=1))
    pictures = []
    for case, stages in played[:PICTURE_SCANS]:
        start, correction = stages[0], stages[-1]
        added = _painted_text(correction.painted[len(start.painted):]) or "no slice"
        note = f"after Start: Dice {_dice_text(start.metrics)}\n+ {added}:\nDice {_dice_text(correction.metrics)}"
        pictures.append(ScanPicture(case, [("result after Start", start.label),
                                           ("after 1 correction", correction.label)], note))
    shown = "" if len(played) <= len(pictures) else f" (the first {len(pictures)} of {len(played)} scans)"
    written["picture"] = save_scans_picture(
        pictures, out / "picture.png",
        title=f"What Start gives from one painted slice (`{job['method']}`){shown}; then one correction")
    return written
