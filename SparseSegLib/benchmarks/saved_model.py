"""What a model saved from a one-scan job gives on the *other* scans of its data set (Save model, then Apply).

``python -m SparseSegLib.benchmarks.saved_model RUN [RUN ...] --out DIR`` reads interactive-benchmark runs
(``python -m SparseSegLib.benchmarks.interactive ... --out RUN``: ``results.json`` and the job folders under
``RUN/jobs/``), writes each played scan's Save model of a stage (:func:`~SparseSegLib.worker.model_export.
export_model`, exactly what the module's button runs), applies it as "Apply model to volume" and ``sparseseg
predict`` do (no paint on the scan) to its own scan and to every other scan of the same data set in the runs, and
scores each against the full reference.

Why: the module offers Save model / Apply model after a one-scan job, and the docs said only that such a model
"segments other scans less well than the job segmented its own". This measures how much, per method, so a user
knows what Apply gives and the project sees what to improve. Settings of a method are never chosen here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import SparseSegError
from .interactive.report import mean_sd
from .interactive.scans import Scan
from .interactive.scoring import score


def played_jobs(runs: list[Path], stage: int) -> list[tuple[Scan, Path, dict]]:
    """``(scan, job folder of stage, the scan's record)`` for every scan of the runs whose stage finished."""
    found = []
    for run in runs:
        if not (run / "results.json").is_file():
            raise SparseSegError(f"{run} holds no results.json",
                                 "Give the --out folder of a python -m SparseSegLib.benchmarks.interactive run.")
        results = json.loads((run / "results.json").read_text())
        for record in results["scans"].values():
            stages = record.get("stages") or []
            played = stages[stage - 1] if len(stages) >= stage else {}
            if played.get("status") != "finished" or not played.get("final"):
                continue
            scan = Scan(record["dataset"], record["case_id"], Path(record["image"]), Path(record["label"]),
                        {int(v): n for v, n in record["classes"].items()}, record.get("channel"))
            job = run / "jobs" / record["dataset"] / record["case_id"] / f"stage-{stage}"
            if not (job / "job.json").is_file():
                raise SparseSegError(f"{job} is missing", "Give the --out folder of an interactive benchmark run.")
            found.append((scan, job, {**record, "method": results.get("job", {}).get("method")}))
    if not found:
        raise SparseSegError(f"no finished stage {stage} in {', '.join(map(str, runs))}",
                             "Run python -m SparseSegLib.benchmarks.interactive first.")
    return found


def _figures(scores: dict) -> dict:
    merged = scores.get("merged") or {}
    return {"dice": scores["dice"], "merged": merged.get("dice"), "ravd": scores["ravd"]}


def evaluate(runs: list[Path], out: Path, stage: int = 1, device: str = "cpu", log=print) -> dict:
    """Save and apply every played job's model (see module doc); returns and writes ``out/saved_model.json``."""
    from ..engine.device import select_device
    from ..engine.model import load_segmenter
    from ..worker.model_export import export_model

    jobs = played_jobs(runs, stage)
    cases = {scan.key: scan.load() for scan, _, _ in jobs}
    torch_device = select_device(device)
    models = []
    for scan, job, record in jobs:
        started = time.perf_counter()
        segmenter = load_segmenter(export_model(job, out / "models" / scan.dataset / scan.case_id))
        applied = {}
        for other, _, _ in jobs:
            if other.dataset != scan.dataset:
                continue
            case = cases[other.key]
            label, _ = segmenter.predict(case.image, torch_device, case.geometry.spacing_kji)
            applied[other.case_id] = _figures(score(label, case.label, case.geometry.spacing_kji, dict(case.class_names)))
        own_job = _figures(record["stages"][stage - 1]["final"])
        others = [v for k, v in applied.items() if k != scan.case_id]
        entry = {"dataset": scan.dataset, "case_id": scan.case_id, "job": str(job), "method": record.get("method"),
                 "job_result": own_job, "saved_model_on_own_scan": applied[scan.case_id], "on_other_scans": applied,
                 "seconds": round(time.perf_counter() - started, 1)}
        models.append(entry)
        other_dice = [v["dice"] for v in others]
        log(f"[{scan.key}] job {own_job['dice']:.3f} | saved model on its own scan {applied[scan.case_id]['dice']:.3f} "
            f"| on {len(others)} other scans {np.mean(other_dice) if other_dice else float('nan'):.3f} "
            f"({entry['seconds']} s)")
    result = {"runs": [str(r) for r in runs], "stage": stage, "models": models, "command": " ".join(sys.argv)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "saved_model.json").write_text(json.dumps(result, indent=1))
    (out / "report.md").write_text("\n".join(table(models)) + "\n")
    return result


def table(models: list[dict]) -> list[str]:
    """Per data set: the job's own result, the saved model on that scan, and on the data set's other scans."""
    lines = ["| data set | models | job on its scan | saved model on its scan | saved model on the other scans | "
             "RAVD on the other scans (mean, largest) |", "|---|---|---|---|---|---|"]
    for dataset in sorted({m["dataset"] for m in models}):
        group = [m for m in models if m["dataset"] == dataset]
        others = [v for m in group for k, v in m["on_other_scans"].items() if k != m["case_id"]]

        def cell(values: list[dict]) -> str:
            mean, sd, n = mean_sd([v["dice"] for v in values])
            merged = [v["merged"] for v in values if v.get("merged") is not None]
            text = f"{mean:.3f} ± {sd:.3f}" if n else "–"
            return f"{text} [{np.mean(merged):.3f}]" if merged else text

        ravd = [v["ravd"] for v in others if v["ravd"] is not None]
        lines.append(f"| {dataset} | {len(group)} | {cell([m['job_result'] for m in group])} | "
                     f"{cell([m['saved_model_on_own_scan'] for m in group])} | {cell(others)} ({len(others)} pairs) | "
                     + (f"{np.mean(ravd):+.2f} ({max(ravd, key=abs):+.2f}) |" if ravd else "– |"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.saved_model", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--out folders of interactive benchmark runs")
    parser.add_argument("--stage", type=int, default=1, help="the stage whose model is saved (1: Start)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.runs, args.out, args.stage, args.device)
    except SparseSegError as error:
        print(f"error: {error.one_line()}", file=sys.stderr)
        return 2
    print("\n".join(table(result["models"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
