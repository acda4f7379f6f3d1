"""``report.md`` and the PNG of the interactive benchmark, from ``results.json`` alone (so a lead can re-render
a report, or merge runs, without playing a scan again).

Per data set: Dice / HD95 / RAVD after one painted slice for each streamed round; Dice per number of painted
slices for the method, Fill between slices and copy-the-slice; time from Start to the first and the final
result; and the scans. Figures are mean ± sd over the scans that have them (``n`` says how many when not all).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

PNG_NAME = "dice_vs_slices.png"
SERIES = (("method", "method"), ("fill", "Fill between slices"), ("copy", "copy-the-slice"))


def _values(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_sd(values) -> tuple[float, float, int]:
    """``(mean, sd, n)`` of the finite values (sd 0 for one value, nan for none)."""
    kept = _values(values)
    if not kept:
        return math.nan, math.nan, 0
    return float(np.mean(kept)), float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0, len(kept)


def _cell(values, total: int, decimals: int = 3) -> str:
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "–"
    text = f"{mean:.{decimals}f} ± {sd:.{decimals}f}"
    return text if n == total else f"{text} (n={n})"


def scans_by_dataset(results: dict) -> dict[str, list[dict]]:
    """Scans with at least one scored stage, grouped by data set in the order first seen."""
    grouped: dict[str, list[dict]] = {}
    for record in results.get("scans", {}).values():
        if record.get("stages"):
            grouped.setdefault(record["dataset"], []).append(record)
    return grouped


def _dice(scores: dict | None, group: str) -> float | None:
    """The Dice of a scores dict: ``mean`` (over the classes, the headline) or ``merged`` (all foreground)."""
    scores = scores or {}
    return scores.get("dice") if group == "mean" else (scores.get("merged") or {}).get("dice")


def method_dice(record: dict, slices: int, group: str = "mean") -> float | None:
    """Dice of the final round of the stage with ``slices`` painted slices (None if it never finished)."""
    stage = next((s for s in record["stages"] if len(s["painted"]) == slices), None)
    return _dice(stage.get("final"), group) if stage else None


def baseline_dice(record: dict, kind: str, slices: int, group: str = "mean") -> float | None:
    entry = record.get("baselines", {}).get("even", {}).get(str(slices))
    return _dice(entry[kind], group) if entry else None


def dice_curves(scans: list[dict], max_slices: int, group: str = "mean") -> dict[str, list[tuple[float, float, int]]]:
    """Per series (method, fill, copy): ``(mean, sd, n)`` of the Dice for 1..``max_slices`` painted slices."""
    curves = {}
    for key, _ in SERIES:
        get = (lambda r, n: method_dice(r, n, group)) if key == "method" else \
            (lambda r, n, k=key: baseline_dice(r, k, n, group))
        curves[key] = [mean_sd([get(r, n) for r in scans]) for n in range(1, max_slices + 1)]
    return curves


def _round_table(scans: list[dict]) -> list[str]:
    first = [s["stages"][0] for s in scans]
    rounds = max((len(stage["rounds"]) for stage in first), default=0)
    merged = any("merged" in (r.get("scores") or {}) for stage in first for r in stage["rounds"])
    lines = ["| round | scans | Dice | HD95 (mm) | RAVD |" + (" Dice (merged) |" if merged else ""),
             "|---|---|---|---|---|" + ("---|" if merged else "")]
    for index in range(rounds):
        scored = [stage["rounds"][index]["scores"] for stage in first if len(stage["rounds"]) > index]
        row = [str(index + 1), str(len(scored))] + [_cell([s[m] for s in scored], len(scored), 2 if m == "hd95" else 3)
                                                    for m in ("dice", "hd95", "ravd")]
        if merged:
            row.append(_cell([s.get("merged", {}).get("dice") for s in scored], len(scored)))
        lines.append("| " + " | ".join(row) + " |")
    final = [(stage.get("final") or {}).get("ravd") for stage in first]
    worst = max(_values(final), default=math.nan)
    lines += ["", f"Final round after 1 slice: Dice {_cell([(s.get('final') or {}).get('dice') for s in first], len(first))}, "
                  f"largest RAVD {worst:+.2f}, scans with RAVD above +1.0: {sum(v > 1.0 for v in _values(final))}."]
    return lines


def _slices_table(scans: list[dict], max_slices: int, group: str = "mean") -> list[str]:
    curves = dice_curves(scans, max_slices, group)
    lines = ["| painted slices | " + " | ".join(title for _, title in SERIES) + " |", "|---|---|---|---|"]
    for n in range(max_slices):
        cells = []
        for key, _ in SERIES:
            mean, sd, count = curves[key][n]
            cells.append("–" if count == 0 else f"{mean:.3f} ± {sd:.3f}" + ("" if count == len(scans) else f" (n={count})"))
        lines.append(f"| {n + 1} | " + " | ".join(cells) + " |")
    return lines


def _time_table(scans: list[dict], max_slices: int) -> list[str]:
    lines = ["| painted slices | stage | first result (s) | final result (s) | rounds |", "|---|---|---|---|---|"]
    for n in range(1, max_slices + 1):
        stages = [s for r in scans for s in r["stages"] if len(s["painted"]) == n]
        if not stages:
            continue
        lines.append(f"| {n} | {'Start' if n == 1 else 'Continue'} | {_cell([s['first_s'] for s in stages], len(stages), 0)} | "
                     f"{_cell([s['final_s'] for s in stages], len(stages), 0)} | "
                     f"{_cell([len(s['rounds']) for s in stages], len(stages), 1)} |")
    return lines


def _scan_list(scans: list[dict]) -> list[str]:
    lines = []
    for r in scans:
        axis = r.get("axis", 0)  # the axis this run painted across
        slices = ", ".join(f"{p['index']}{'' if p['axis'] == axis else ' (axis ' + str(p['axis']) + ')'} "
                           f"[{p['source']}]" for p in r["stages"][-1]["painted"])
        final = (r["stages"][-1].get("final") or {}).get("dice")
        lines.append(f"- `{r['case_id']}` ({'x'.join(map(str, r['shape']))}): {r['status']}; painted {slices}; "
                     f"last Dice {final if final is not None else '–'}")
        fallbacks = [f"slice {p['index']}: {p['note']}" for p in r["stages"][-1]["painted"]
                     if p["source"] == "gap" and p.get("note")]
        if fallbacks:
            lines.append(f"  - fallbacks: {'; '.join(fallbacks)}")
    return lines


def write_report(results: dict, out: Path) -> Path:
    """Write ``out/report.md`` (and the PNG beside it) from a results dict; returns the report's path."""
    config = results.get("config", {})
    job = results.get("job", {})
    max_slices = int(config.get("slices", 5))
    axis = int(config.get("axis", 0))
    across = "k" if axis == 0 else f"array axis {axis} ({'j' if axis == 1 else 'i'})"
    lines = ["# Interactive benchmark: one painted slice, then corrections", "",
             f"Job: method `{job.get('method')}`, parameters `{job.get('parameters')}` ({job.get('source', '')}); "
             f"next slice: {config.get('next', 'suggested')}; Continue: "
             + ("the method decides its rounds" if (job.get("parameters") or {}).get("rounds", 0) is None
                else f"{config.get('continue_rounds')} more round(s)") + "; split "
             f"`{config.get('split')}` (seed {config.get('split_seed')}); device {job.get('device')}, "
             f"{config.get('jobs')} scan(s) at a time with {config.get('threads')} thread(s) per worker.", "",
             f"The user paints whole slices across {across}. Dice / HD95 / RAVD are the mean over the classes. "
             "Baselines paint the same number of slices evenly over the object's extent along that axis; Fill "
             "between slices interpolates each class on its own (as Slicer does with one segment per class) and "
             "with one slice is that slice alone.", ""]
    if config.get("command"):
        lines += [f"Command: `{config['command']}`", ""]
    grouped = scans_by_dataset(results)
    for name, scans in grouped.items():
        lines += [f"## {name} ({len(scans)} scans)", "", "### After 1 painted slice, each streamed round", ""]
        lines += _round_table(scans) + ["", "### Dice against painted slices", ""]
        lines += _slices_table(scans, max_slices)
        if any(method_dice(r, 1, "merged") is not None for r in scans):
            lines += ["", "The same with all classes merged into one foreground:", ""]
            lines += _slices_table(scans, max_slices, "merged")
        lines += ["", "### Time from the button to the result", ""]
        lines += _time_table(scans, max_slices) + ["", "### Scans", ""] + _scan_list(scans) + [""]
    if grouped:
        png = plot_dice(grouped, max_slices, out / PNG_NAME)
        lines += [f"![Dice against painted slices]({png.name})", ""]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def plot_dice(grouped: dict[str, list[dict]], max_slices: int, path: Path) -> Path:
    """Dice against painted slices (1..N): method vs Fill between slices vs copy, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(grouped), figsize=(4.2 * len(grouped), 3.6), squeeze=False)
    x = np.arange(1, max_slices + 1)
    for axis, (name, scans) in zip(axes[0], grouped.items()):
        curves = dice_curves(scans, max_slices)
        for (key, title), marker in zip(SERIES, "os^"):
            mean = np.array([c[0] for c in curves[key]])
            sd = np.array([c[1] for c in curves[key]])
            axis.errorbar(x, mean, yerr=sd, marker=marker, capsize=3, label=title)
        axis.set_title(f"{name} ({len(scans)} scans)")
        axis.set_xlabel("painted slices")
        axis.set_xticks(x)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("Dice (class mean)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def merge_results(runs: list[dict]) -> dict:
    """One results dict from several runs of the same job (e.g. one run per data set played side by side): their
    scans together, the first run's settings, the largest slice count and every run's command."""
    jobs = {repr(sorted((run.get("job") or {}).items())) for run in runs}
    if len(jobs) > 1:
        from ...errors import SparseSegError

        raise SparseSegError("the runs played different jobs", "Merge only runs of the same method and parameters.")
    merged = {"job": runs[0].get("job", {}), "config": dict(runs[0].get("config", {})), "scans": {}}
    merged["config"]["slices"] = max(int((run.get("config") or {}).get("slices", 5)) for run in runs)
    merged["config"]["command"] = " ; ".join(str((run.get("config") or {}).get("command", "")) for run in runs)
    for run in runs:
        merged["scans"].update(run.get("scans", {}))
    return merged


def main(argv: list[str] | None = None) -> int:
    """``python -m SparseSegLib.benchmarks.interactive.report RUN/results.json ... --out DIR``: one report of several runs."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.interactive.report",
                                     description="Merge interactive-benchmark runs into one report.md and PNG.")
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of the runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged results.json, report.md, PNG")
    args = parser.parse_args(argv)
    merged = merge_results([json.loads(path.read_text()) for path in args.results])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(merged, indent=1))
    print(write_report(merged, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
