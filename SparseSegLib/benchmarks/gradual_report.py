"""The Gradual Learning benchmark's report: ``report.md`` and the Figure 2 analogue ``gradual_iou.png`` from its
``results.json`` data, next to the paper's figures (:mod:`SparseSegLib.benchmarks.gradual` runs it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..progress import format_duration

#: The paper's figures (Calgary-Campinas brain MRI, IoU, mean over 5 models): before GL -> after 10 repetitions.
PAPER = {2: (0.30, 0.58), 3: (0.41, 0.63), 10: (0.55, 0.76), "full": 0.86}


def _by_round(runs: list[dict], n) -> tuple[np.ndarray, np.ndarray, int]:
    curves = [[r["test_iou_mean"] for r in run["rounds"]] for run in runs if run["n"] == n]
    if not curves:
        return np.array([]), np.array([]), 0
    length = min(len(c) for c in curves)
    array = np.array([c[:length] for c in curves])
    return array.mean(0), array.std(0), len(curves)


def write_report(data: dict, out: Path) -> None:
    config = data["config"]
    lines = ["# Gradual Learning benchmark", "",
             f"Started {data.get('started')}, CPU only ({data['environment']['cpu_count']} cores, torch "
             f"{data['environment']['torch']}, {data['environment']['torch_threads']} threads), shared machine.", "",
             "## Paper protocol (left atrium)", ""]
    split = data.get("split")
    if split:
        lines += [f"Scans downsampled x{config['downsample']} to {tuple(split['shape'])} (k, j, i); box {split['sizes']['box']}^3, "
                  f"crop {split['sizes']['crop']}^3, step s = {split['sizes']['step']}; {config['rounds'] - 1} GL repetitions, "
                  f"{config['iterations_per_round']} iterations per round (batch {config['batch_size']}); "
                  f"{len(split['train'])} training scan(s), {len(split['test'])} test scans. "
                  "IoU of the foreground on the test scans, mean +- sd over training scans (sd of one scan = 0).", ""]
    ns = sorted({run["n"] for run in data["protocol"]})
    if ns:
        stats = {n: _by_round(data["protocol"], n) for n in ns}
        length = max(len(stats[n][0]) for n in ns)
        lines.append("| GL repetition | " + " | ".join(f"n = {n} ({stats[n][2]} scan(s))" for n in ns) + " |")
        lines.append("|---|" + "---|" * len(ns))
        for r in range(length):
            cells = [f"{stats[n][0][r]:.3f} +- {stats[n][1][r]:.3f}" if r < len(stats[n][0]) else "" for n in ns]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        if data["full"]:
            full = [f["test_iou_mean"] for f in data["full"]]
            lines += ["", f"Full-volume training on the same scan(s), {data['full'][0]['iterations']} iterations: "
                          f"IoU {np.mean(full):.3f} +- {np.std(full):.3f} ({len(full)} scan(s))."]
        lines += ["", "Paper (Calgary-Campinas brain MRI, 5 training scans, 25 test scans): "
                      + "; ".join(f"n={n}: {PAPER[n][0]:.2f} -> {PAPER[n][1]:.2f}" for n in (2, 3, 10))
                      + f"; full {PAPER['full']:.2f}.", ""]
        lines += ["Per run (training scan, n): IoU round 0 -> last, best round, pseudo-label accuracy at the last round, "
                  "seconds per round (training + whole-scan prediction) + seconds to score the test scans:", ""]
        for run in data["protocol"]:
            curve = [r["test_iou_mean"] for r in run["rounds"]]
            last = run["rounds"][-1]
            lines.append(f"- {run['train']} n={run['n']} ({run['annotated_fraction']:.1%} annotated, "
                         f"{run['annotated_foreground']} foreground voxels): {curve[0]:.3f} -> {curve[-1]:.3f} "
                         f"(best {max(curve):.3f} at {int(np.argmax(curve))}), PL acc {last['pseudo_label_accuracy']}, "
                         f"{np.mean([r['round_seconds'] for r in run['rounds']]):.0f} + "
                         f"{np.mean([r['test_seconds'] for r in run['rounds']]):.0f} s/round")
        lines.append("")
    for item in data.get("control", []):
        if item is data["control"][0]:
            lines += ["## Control: sparse-only on the same boxes, as many iterations as the whole GL run", "",
                      "| training scan | n | iterations | test IoU |", "|---|---|---|---|"]
        lines.append(f"| {item['train']} | {item['n']} | {item['iterations']} | {item['test_iou_mean']:.3f} |")
        if item is data["control"][-1]:
            lines.append("")
    for item in data["interactive"]:
        if item is data["interactive"][0]:
            lines += ["## Interactive use (transductive Dice on the annotated volume)", ""]
        lines += [f"### {item['volume']} {tuple(item['shape'])}: {item['form']} (`{item['spec']}`, {item['network'].upper()})", "",
                  "| round | Dice (mean of classes) | per class | Dice outside the annotation | labelled | wall s |",
                  "|---|---|---|---|---|---|"]
        for row in item["rounds"]:
            per = ", ".join(f"{k}: {v:.3f}" for k, v in row["dice"].items())
            lines.append(f"| {row['round']} | {row['dice_mean']:.3f} | {per} | {row['dice_unannotated']:.3f} | "
                         f"{row['labelled_fraction']:.0%} | {row['seconds']:.1f} |")
        lines += ["", f"Step {item['rounds'][0]['step']} voxel(s) per round; total {format_duration(item['wall_seconds'])}.", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    if ns:
        plot(data, out / "gradual_iou.png")


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    colors = {2: "tab:blue", 3: "tab:orange", 10: "tab:green"}
    for n in sorted({run["n"] for run in data["protocol"]}):
        mean, sd, count = _by_round(data["protocol"], n)
        x = np.arange(len(mean))
        color = colors.get(n)
        axis.plot(x, mean, "o-", color=color, label=f"n = {n} ({count} scan(s))")
        axis.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2)
        if n in PAPER:
            axis.plot([0, len(mean) - 1], PAPER[n], ":", color=color, alpha=0.6)
    if data["full"]:
        axis.axhline(np.mean([f["test_iou_mean"] for f in data["full"]]), color="k", ls="--", label="full volume (ours)")
    axis.axhline(PAPER["full"], color="gray", ls=":", label="paper: full 0.86; dotted: paper start -> end")
    axis.set_xlabel("GL repetition")
    axis.set_ylabel("mean test IoU")
    axis.set_ylim(0, 1)
    axis.set_title("3D Gradual Learning, left atrium (cf. Engster et al. 2025, Fig. 2)", fontsize=9)
    axis.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 0.33))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
