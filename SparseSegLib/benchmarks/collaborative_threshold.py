"""Score one trained ``collaborative`` model at several prediction thresholds (the ``prediction_threshold`` sweep).

A threshold only changes how the final networks' probabilities become labels, so one training serves every value:
this trains the method once on a split's training part (the same split, seed and annotation as ``sparseseg bench``),
saves the model, then scores the chosen part at each threshold with the model's own post-processing. Choose on the
val part (``--evaluate val``); report the test part once, with ``sparseseg bench``.

    python -m SparseSegLib.benchmarks.collaborative_threshold --dataset DATA --split 0.6,0.2,0.2 \\
        --iterations 400 --option propagate_cache=CACHE --out bench-output/sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..annotation import annotate_case
from ..dataset import load_dataset, split_cases
from ..engine.model import load_segmenter
from ..engine.postprocess import object_labels, postprocess_labels
from ..methods import MethodOptions, get_method
from ..methods.base import SilentReporter
from ..metrics import case_metrics


def train_or_load(args: argparse.Namespace, dataset, part: dict) -> object:
    """The model in ``OUT/model``: trained on the split's training part unless it is already there."""
    folder = args.out / "model"
    if not (folder / "config.json").exists():
        load = {r.case_id: r for r in dataset.cases}
        train = [annotate_case(dataset.load(load[c]), args.annotation, args.seed) for c in part["train"]]
        extra = dict(item.split("=", 1) for item in args.option)
        options = MethodOptions(network="2d", budget=args.budget, device="cpu", seed=args.seed,
                                iterations=args.iterations, extra=extra)
        tick = time.perf_counter()
        segmenter = get_method(args.method).train(train, options, SilentReporter())
        print(f"trained {args.method} {extra} on {len(train)} volumes in {time.perf_counter() - tick:.0f} s", flush=True)
        segmenter.save(folder)
    return load_segmenter(folder)


def auto_threshold(args: argparse.Namespace, dataset, part: dict, segmenter) -> float:
    """``prediction_threshold=auto`` for this model, measured as the method measures it after training (its targets
    on the training part: the propagation comes from ``propagate_cache`` when the options name one)."""
    import torch

    from ..methods.collaborative.branches import final_targets, registration_branch, scan_of
    from ..methods.collaborative.calibration import calibrate

    refs = {r.case_id: r for r in dataset.cases}
    train = [annotate_case(dataset.load(refs[c]), args.annotation, args.seed) for c in part["train"]]
    settings = get_method(args.method).settings(MethodOptions(extra=dict(item.split("=", 1) for item in args.option)))
    if settings.uses_semi:
        raise SystemExit("--thresholds auto re-derives the final targets of branches=registration only")
    scans = [scan_of(case, segmenter.normalization) for case in train]
    registration, _ = registration_branch(scans, segmenter.num_classes, settings, torch.device("cpu"), args.seed,
                                          SilentReporter(), "calibration")
    volumes, _ = final_targets(scans, None, registration, settings, segmenter.num_classes)
    record = calibrate(segmenter, scans, volumes, torch.device("cpu"))
    print(f"auto: {record}", flush=True)
    return record["prediction_threshold"]


def sweep(segmenter, cases: list, thresholds: list[float], class_names: dict) -> dict[float, list[dict]]:
    """Per threshold, each case's metrics (``merged`` foreground where several classes, else the class mean)."""
    rows: dict[float, list[dict]] = {t: [] for t in thresholds}
    for case in cases:
        _, probabilities = segmenter.predict(case.image, "cpu", case.geometry.spacing_kji)
        for threshold in thresholds:
            labels = postprocess_labels(object_labels(probabilities, threshold), probabilities, segmenter.postprocess)
            metrics = case_metrics(labels, case.label, case.geometry.spacing_kji, class_names)
            rows[threshold].append({"case": case.case_id, "foreground": metrics.get("merged", metrics["mean"]),
                                    "class_mean": metrics["mean"]})
    return rows


def table(rows: dict[float, list[dict]]) -> str:
    lines = ["| threshold | Dice % | signed RAVD | HD95 mm | class-mean Dice % |", "|---|---|---|---|---|"]
    for threshold, cases in rows.items():
        dice = np.array([c["foreground"]["dice"] for c in cases]) * 100
        ravd = np.mean([c["foreground"]["ravd"] for c in cases])
        hd95 = np.mean([c["foreground"]["hd95"] for c in cases])
        mean = np.mean([c["class_mean"]["dice"] for c in cases]) * 100
        lines.append(f"| {threshold:g} | {dice.mean():.2f} ± {dice.std():.2f} | {ravd:+.3f} | {hd95:.2f} | {mean:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="0.6,0.2,0.2", help="train,val,test fractions (as sparseseg bench)")
    parser.add_argument("--evaluate", choices=["val", "test"], default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotation", default="central-slice")
    parser.add_argument("--method", default="collaborative")
    parser.add_argument("--budget", default="quick", choices=["quick", "paper"])
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9",
                        help="comma-separated; auto: the threshold prediction_threshold=auto measures for this model")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    dataset = load_dataset(args.dataset)
    part = split_cases([r.case_id for r in dataset.cases], tuple(float(f) for f in args.split.split(",")), args.seed)
    segmenter = train_or_load(args, dataset, part)
    refs = {r.case_id: r for r in dataset.cases}
    cases = [dataset.load(refs[c]) for c in part[args.evaluate]]
    thresholds = [auto_threshold(args, dataset, part, segmenter) if t == "auto" else float(t)
                  for t in args.thresholds.split(",")]
    rows = sweep(segmenter, cases, thresholds, dataset.class_names)
    (args.out / "thresholds.json").write_text(json.dumps({str(t): r for t, r in rows.items()}, indent=1))
    print(f"{len(cases)} {args.evaluate} volumes, post-processing {segmenter.postprocess}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
