"""Benchmark extras for round-based methods (self-labelling): per-round test Dice, its plot, and
runs reused from an earlier benchmark on the same split.

A method may leave ``segmenter.round_snapshots`` (a list of ``{"round", "labelled_fraction", "state"}``,
the network weights after each round, and optionally ``"config"``, their NetworkConfig when it differs from the final one). The benchmark then scores every snapshot on the test part, so
the curve shows what each round of self-labelling did to held-out volumes; the test cases are never
seen during training.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from .metrics import case_metrics, mask_dice


def round_test_curve(segmenter, test: list, device, class_names: dict, headline: str) -> dict | None:
    """Mean test Dice (headline label) after every round, and the final model without post-processing."""
    snapshots = getattr(segmenter, "round_snapshots", None)
    if not snapshots:
        return None
    from .engine.networks import build_network

    raw = replace(segmenter, postprocess="none")
    points = []
    for snapshot in snapshots:
        # a snapshot may hold another network than the final one (an axis ensemble appears in the last round)
        config = snapshot.get("config", segmenter.network_config)
        network = build_network(config, segmenter.num_classes)
        network.load_state_dict(snapshot["state"])
        # ... and may be fed another way (a 3D student follows 2D networks that z-score each slice)
        at_round = replace(segmenter, network=network, network_config=config,
                           patch_size=tuple(snapshot.get("patch_size", segmenter.patch_size)),
                           normalization=snapshot.get("normalization", segmenter.normalization))
        dice = [_dice(at_round.predict(c.image, device, c.geometry.spacing_kji)[0], c.label, class_names, headline)
                for c in test]
        points.append({"round": snapshot["round"], "labelled_fraction": snapshot["labelled_fraction"],
                       "dice": float(np.nanmean(dice)), "dice_sd": float(np.nanstd(dice, ddof=1)) if len(dice) > 1 else 0.0})
    curve = {"points": points}
    if segmenter.postprocess and segmenter.postprocess != "none":
        scores = [case_metrics(raw.predict(c.image, device, c.geometry.spacing_kji)[0], c.label, c.geometry.spacing_kji,
                               class_names)[headline] for c in test]
        curve["without_postprocess"] = {m: {"mean": float(np.nanmean([s[m] for s in scores])),
                                            "sd": float(np.nanstd([s[m] for s in scores], ddof=1))}
                                        for m in ("dice", "iou", "hd95", "tpr", "tnr")}
        curve["postprocess"] = segmenter.postprocess
    return curve


def _dice(predicted: np.ndarray, reference: np.ndarray, class_names: dict, group: str) -> float:
    """Dice of one group as :func:`case_metrics` scores it (merged foreground, or one named class), fast."""
    if group == "merged":
        guess, truth = predicted > 0, reference > 0
    else:
        value = next((int(k) for k, v in class_names.items() if v == group), 1)
        guess, truth = predicted == value, reference == value
    return mask_dice(guess, truth)


def reuse_runs(results: dict, path: Path, log=print) -> list[str]:
    """Copy runs of an earlier ``results.json`` whose split equals this one and that this run lacks."""
    path = Path(path)
    if not path.is_file():
        log(f"--reuse-runs: {path} not found; no run reused")
        return []
    earlier = json.loads(path.read_text())
    if earlier.get("folds") != results["folds"] or earlier["config"]["annotation"] != results["config"]["annotation"]:
        log(f"--reuse-runs: {path} was run on another split or annotation; no run reused")
        return []
    reused = []
    for name, run in earlier["runs"].items():
        if name not in results["runs"]:
            results["runs"][name] = {**run, "reused_from": str(path)}
            reused.append(name)
    return reused


def write_round_curves(results: dict, out: Path) -> Path | None:
    """``round_dice.png``: test Dice after each round; a hollow marker once every training slice is labelled
    (the fusion rounds, and an ensemble's average, come after that point)."""
    curves = {name: run["folds"][0].get("round_curve") for name, run in results["runs"].items()}
    curves = {name: curve for name, curve in curves.items() if curve}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .paper_figures import reference_for

    reference = reference_for(results["dataset"]["name"], Path(results["dataset"]["root"]).name)
    figure, axis = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for name, curve in curves.items():
        x = list(range(1, len(curve["points"]) + 1))
        y = [p["dice"] for p in curve["points"]]
        (line,) = axis.plot(x, y, marker="o", markersize=3, label=name)
        full = [(i, d) for i, d, p in zip(x, y, curve["points"]) if p["labelled_fraction"] >= 1.0]
        if full:
            axis.plot(*zip(*full), linestyle="none", marker="o", markersize=6, markerfacecolor="white",
                      color=line.get_color())
    if reference:
        for key, style in (("self-labelling-faithful (2D)", ":"), ("sparse-only (2D)", "--")):
            row = reference.rows.get(key)
            if row and "dice" in row.metrics:
                axis.axhline(row.metrics["dice"], linestyle=style, color="grey", linewidth=1)
                axis.text(0.0, row.metrics["dice"] + 0.01, f"paper: {row.label}", color="grey", fontsize=7)
    axis.set_xlabel("round (hollow: every training slice labelled; fusion rounds, then an ensemble's average, last)")
    axis.set_ylabel(f"test Dice ({results['headline_group']} label)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(f"{results['dataset']['name']}: test Dice after each self-labelling round")
    figure.tight_layout()
    path = Path(out) / "round_dice.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def append_round_report(results: dict, report: Path) -> None:
    """Add the per-round curve, the post-processing ablation and reused runs to ``report.md``."""
    lines = []
    reused = [name for name, run in results["runs"].items() if run.get("reused_from")]
    if reused:
        sources = sorted({results["runs"][n]["reused_from"] for n in reused})
        lines += ["", "## Reused runs", "",
                  f"{', '.join(reused)}: copied from {', '.join(sources)} (same data set, split, seed and annotation; "
                  "trained by that earlier benchmark, their train time is theirs, not part of this run's wall time)."]
    merged = [name for name, run in results["runs"].items()
              if run["folds"] and (run["folds"][0].get("training") or {}).get("settings", {}).get("classes") == "merged"]
    if merged:
        lines += ["", f"Note: {', '.join(merged)} trained on the merged foreground (the paper's binary task) and output one "
                  "label (1), so their per-class rows above are not meaningful; score them on the merged label."]
    curves = {name: run["folds"][0].get("round_curve") for name, run in results["runs"].items()
              if run["folds"] and run["folds"][0].get("round_curve")}
    if curves:
        lines += ["", "## Test Dice after each round (`round_dice.png`)", "",
                  "Round 1 is the model trained on the annotated slices only (the paper's 'central slices only' with "
                  "this run's network and settings).", ""]
        rounds = max(len(c["points"]) for c in curves.values())
        header = ["round"] + list(curves)
        rows = []
        for index in range(rounds):
            row = [str(index + 1)]
            for curve in curves.values():
                points = curve["points"]
                row.append(f"{points[index]['dice']:.3f} ({points[index]['labelled_fraction']:.0%})" if index < len(points) else "")
            rows.append(row)
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", "(Dice on the headline label, mean over test cases; in brackets the fraction of training slices "
                  "labelled after that round.)"]
        post = {name: c for name, c in curves.items() if c.get("without_postprocess")}
        if post:
            lines += ["", "## Post-processing ablation (same model, with and without)", "",
                      "| run | post-processing | Dice with | Dice without | HD95 (mm) with | HD95 (mm) without |", "|---|---|---|---|---|---|"]
            for name, curve in post.items():
                summary = results["runs"][name]["summary"][results["headline_group"]]
                raw = curve["without_postprocess"]
                lines.append(f"| {name} | {curve['postprocess']} | {summary['dice']['mean']:.3f} ± {summary['dice']['sd']:.3f} | "
                             f"{raw['dice']['mean']:.3f} ± {raw['dice']['sd']:.3f} | {_mm(summary.get('hd95'))} | "
                             f"{raw['hd95']['mean']:.2f} ± {raw['hd95']['sd']:.2f} |")
    if lines:
        with open(report, "a") as handle:
            handle.write("\n".join(lines) + "\n")


def _mm(entry: dict | None) -> str:
    if not entry or entry.get("n", 1) == 0 or entry.get("mean") is None or math.isnan(entry["mean"]):
        return "n/a"
    return f"{entry['mean']:.2f} ± {entry['sd']:.2f}"


def combine_results(paths: list[Path], out: Path, wall_seconds: float | None = None) -> dict:
    """One report from benchmarks run in parallel on the same split: runs merged, report and plots rewritten.

    Every ``results.json`` must hold the identical split and annotation (checked). ``wall_seconds`` is the
    wall time of the whole parallel run (default: the longest of the parts).
    """
    from .errors import SparseSegError
    from .report import write_plots, write_report, write_results

    parts = [json.loads(Path(p).read_text()) for p in paths]
    combined = json.loads(json.dumps(parts[0]))
    for path, part in zip(paths[1:], parts[1:]):
        if part["folds"] != combined["folds"] or part["config"]["annotation"] != combined["config"]["annotation"]:
            raise SparseSegError(f"{path} was run on another split or annotation", "Combine runs of one split only.")
        for name, run in part["runs"].items():
            combined["runs"].setdefault(name, run)
    combined["config"]["methods"] = sorted({m for p in parts for m in p["config"]["methods"]})
    combined["combined_from"] = [str(p) for p in paths]
    combined["wall_seconds"] = float(wall_seconds if wall_seconds is not None else max(p["wall_seconds"] for p in parts))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(combined, out / "results.json")
    write_report(combined, out / "report.md")
    write_plots(combined, out)
    write_round_curves(combined, out)
    append_round_report(combined, out / "report.md")
    with open(out / "report.md", "a") as handle:
        handle.write("\nCombined from " + ", ".join(f"`{p}`" for p in paths) + " (benchmarks run in parallel on the same split).\n")
    return combined


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.round_curves",
                                     description="Combine benchmark results.json files of one split into one report.")
    parser.add_argument("results", nargs="+", type=Path, help="results.json files (the first one's header is kept)")
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json, report.md and plots")
    parser.add_argument("--wall-seconds", type=float, help="wall time of the whole run (default: longest part)")
    args = parser.parse_args(argv)
    combine_results(args.results, args.out, args.wall_seconds)
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
