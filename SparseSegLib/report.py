"""Benchmark reports: ``results.json``, ``report.md`` (our figures next to the paper's, with units) and PNG plots.

Below both writers of a benchmark's results (:mod:`.bench` runs one, :mod:`.round_curves` combines parallel ones),
so neither needs the other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .metrics import DISPLAY_NAMES, METRIC_UNITS
from .paper_figures import reference_for
from .progress import format_duration

REPORT_METRICS = ("dice", "iou", "hd95", "assd", "tpr", "tnr", "ravd", "boundary_iou")
PAPER_METRICS = ("dice", "iou", "tpr", "tnr", "hd95", "assd", "boundary_iou")



def write_results(results: dict, path: Path) -> None:
    """``results.json``: the benchmark's results as JSON (numpy scalars as numbers, paths as text)."""
    Path(path).write_text(json.dumps(results, indent=1, default=_json_default))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")

def _header(metric: str) -> str:
    unit = METRIC_UNITS.get(metric, "")
    return f"{DISPLAY_NAMES.get(metric, metric)} ({unit})" if unit else DISPLAY_NAMES.get(metric, metric)


def _mean_sd(stats: dict | None, metric: str) -> str:
    if not stats or metric not in stats or stats[metric]["n"] == 0:
        return "n/a"
    entry = stats[metric]
    digits = 2 if METRIC_UNITS.get(metric) == "mm" else 3
    text = f"{entry['mean']:.{digits}f} ± {entry['sd']:.{digits}f}"
    return text + (f" ({entry['n_nan']} n/a)" if entry.get("n_nan") else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def write_report(results: dict, path: Path) -> Path:
    """Write the markdown report for ``results`` (the content of results.json)."""
    config, dataset, runs = results["config"], results["dataset"], results["runs"]
    headline = results["headline_group"]
    reference = reference_for(dataset["name"], Path(dataset["root"]).name)
    folds = results["folds"]
    sizes = f"{len(folds[0]['train'])} train / {len(folds[0]['val'])} val / {len(folds[0]['test'])} test"
    lines = [
        f"# SparseSeg benchmark: {dataset['name']}, annotation `{config['annotation']}`",
        "",
        f"- Data: `{dataset['root']}` ({dataset['cases']} cases{', subset of ' + str(config['max_cases']) if config['max_cases'] else ''}); "
        f"classes: {', '.join(f'{k} {v}' for k, v in dataset['classes'].items())}",
        f"- Protocol: {'%d-fold cross-validation' % config['folds'] if config['folds'] else 'split ' + '/'.join(str(int(100 * f)) for f in config['split'])} "
        f"(seed {config['seed']}): {sizes}; sparse annotation simulated on train and val cases, scored on the full labels of the "
        f"{config.get('evaluate', 'test')} cases" + (" (the validation part: for choosing settings, not for reporting)"
                                                    if config.get("evaluate") == "val" else ""),
        f"- Budget `{config['budget']}`; device {results['environment']['device']}, torch {results['environment']['torch']}, "
        f"{results['environment']['cpu_count']} CPU cores; wall time {format_duration(results['wall_seconds'])}",
        "- Metrics computed in 3D per test case with `SparseSegLib.metrics` (mean ± sample sd over cases); HD95/ASSD in mm "
        "with the image spacing; n/a = a case where a distance is undefined (empty prediction), left out of the mean.",
        "",
        f"## Results on the `{headline}` label" + (" (anterior + posterior, as the paper scores)" if headline == "merged" else ""),
        "",
    ]
    header = ["run"] + [_header(m) for m in REPORT_METRICS] + ["train time"]
    rows = [[name] + [_mean_sd(run["summary"].get(headline), m) for m in REPORT_METRICS] + [format_duration(run["train_seconds"])]
            for name, run in runs.items()]
    lines += _table(header, rows)
    if reference:
        lines += ["", "## Next to the paper", "", f"Source: {reference.source}. Paper protocol: {reference.protocol}.", ""]
        used = [m for m in PAPER_METRICS if any(m in row.metrics for row in reference.rows.values())]
        header = ["paper row", "our run"] + [f"{_header(m)} paper" for m in used] + [f"{_header(m)} ours" for m in used]
        rows = []
        for name, row in reference.rows.items():
            ours = runs.get(name, {}).get("summary", {}).get(headline)
            rows.append([row.label, name if name in runs else "(not run)"]
                        + [f"{row.metrics[m]:.3f}" if m in row.metrics else "" for m in used]
                        + [_mean_sd(ours, m) if ours else "" for m in used])
        lines += _table(header, rows)
    class_groups = [g for g in next(iter(runs.values()))["summary"] if g not in ("merged", "mean")] if runs else []
    if len(class_groups) > 1 or headline == "merged":
        lines += ["", "## Per class", ""]
        header = ["run", "class"] + [_header(m) for m in ("dice", "iou", "hd95", "assd")]
        rows = [[name, group] + [_mean_sd(run["summary"].get(group), m) for m in ("dice", "iou", "hd95", "assd")]
                for name, run in runs.items() for group in class_groups + ["mean"]]
        lines += _table(header, rows)
    lines += ["", "## Timing", ""]
    header = ["run", "training (all folds)", "prediction per case", "iterations", "batch"]
    rows = []
    for name, run in runs.items():
        fold = run["folds"][0]
        train = fold["training"].get("train", {})
        rows.append([name, format_duration(run["train_seconds"]), f"{fold['predict_seconds_per_case']:.2f} s",
                     str(train.get("iterations", "")), str(train.get("batch_size", ""))])
    lines += _table(header, rows)
    lines += ["", "Plots: `dice_boxplot.png` (per-case Dice of every run on the headline label).", ""]
    path.write_text("\n".join(lines))
    return path


def write_plots(results: dict, out: Path) -> list[Path]:
    """A box plot of per-case Dice per run (headline label), with the paper's figure as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, headline = results["runs"], results["headline_group"]
    reference = reference_for(results["dataset"]["name"], Path(results["dataset"]["root"]).name)
    names = list(runs)
    values = [[c[headline]["dice"] for c in run["cases"].values() if not math.isnan(c[headline]["dice"])] for run in runs.values()]
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(names), 4.2), dpi=110)
    axis.boxplot(values, showmeans=True)
    axis.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    if reference:
        for position, name in enumerate(names, start=1):
            row = reference.rows.get(name)
            if row and "dice" in row.metrics:
                axis.plot(position, row.metrics["dice"], marker="*", color="crimson", markersize=12,
                          label="paper" if position == 1 or "paper" not in axis.get_legend_handles_labels()[1] else None)
        if axis.get_legend_handles_labels()[1]:
            axis.legend(loc="lower right")
    axis.set_ylabel(f"Dice ({headline} label)")
    axis.set_ylim(0, 1)
    axis.set_title(f"{results['dataset']['name']}: {results['config']['annotation']} annotation, {results['config'].get('evaluate', 'test')} part")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = out / "dice_boxplot.png"
    figure.savefig(path)
    plt.close(figure)
    return [path]
