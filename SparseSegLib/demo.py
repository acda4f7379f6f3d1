"""``sparseseg demo``: the main job on the bundled sample data, start to finish in a few minutes on CPU.

Every sample volume gets a sparse annotation (by default its central slice, as a user would paint it
in Slicer), one network is trained from those annotations, and every volume is then segmented in
full. The default method is Gradual Learning (2D slice-stack form with the default 2D network: the
labelled block grows from the annotated slice round by round with pseudo-labels; 4 rounds of 100 iterations); after every round
the demo prints the labelled fraction and the mean Dice, and ``rounds.png`` shows one volume round by
round. The demo writes the label maps (NIfTI and Slicer .seg.nrrd), the model, a metrics table against
the full reference labels and pictures, and prints where they are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .annotation import annotate_case
from .dataset import load_dataset
from .io import write_image, write_segmentation
from .methods import MethodOptions, get_method
from .metrics import case_metrics, format_table, summarize
from .progress import TerminalReporter, format_duration
from .visualize import save_case_picture

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "hippocampus"


def run_demo(
    out: Path,
    dataset_dir: Path = SAMPLE_DATA,
    annotation: str = "central-slice",
    method: str = "gradual",
    network: str = "2d",
    budget: str = "quick",
    device: str = "auto",
    seed: int = 0,
    reporter: TerminalReporter | None = None,
    rounds: int = 4,
    iterations_per_round: int | None = None,
    method_options: dict | None = None,
) -> dict[str, Path]:
    """Run the demo and return the paths it wrote, by kind."""
    reporter = reporter or TerminalReporter()
    started = time.perf_counter()
    dataset = load_dataset(dataset_dir)
    cases = [annotate_case(dataset.load(ref), annotation, seed) for ref in dataset.cases]
    reporter.log(f"demo: {len(cases)} sample volumes from {dataset_dir}, each annotated on `{annotation}`; "
                 f"training `{method}` ({network.upper()} network, budget {budget})")
    out = Path(out)
    results: dict = {}
    if method == "gradual":
        # quick budget: 100 iterations per round (the budget's 300 split over 4 rounds left the first model too weak
        # for useful pseudo-labels: mean Dice 0.32 vs 0.41 with 4 x 100 on this machine)
        if iterations_per_round is None and budget == "quick":
            iterations_per_round = 100
        options = MethodOptions(network=network, budget=budget, device=device, seed=seed, rounds=rounds,
                                iterations_per_round=iterations_per_round, extra=dict(method_options or {}))
        segmenter, results, history = _gradual_rounds(cases, options, reporter, out, annotation, network)
    else:
        options = MethodOptions(network=network, budget=budget, device=device, seed=seed, extra=dict(method_options or {}))
        segmenter = get_method(method).train(cases, options, reporter)
    written: dict[str, Path] = {"model": segmenter.save(out / "model")}
    if method == "gradual":
        written["rounds picture"] = out / "rounds.png"
        written["rounds table"] = out / "rounds.md"
    per_case = {}
    for case in cases:
        if case.case_id not in results:
            results[case.case_id], _ = segmenter.predict(case.image, device if device != "auto" else "cpu")
        label = results[case.case_id]
        write_image(label, case.geometry, out / "labels" / f"{case.case_id}.nii.gz")
        write_segmentation(label, case.geometry, out / "segmentations" / f"{case.case_id}.seg.nrrd",
                           segmenter.class_names, segmenter.class_colors)
        per_case[case.case_id] = case_metrics(label, case.label, case.geometry.spacing_kji, dataset.class_names)
    written["labels"] = out / "labels"
    written["segmentations"] = out / "segmentations"
    summary = summarize(list(per_case.values()))
    table = "\n\n".join(
        f"### {group}\n\n" + format_table(per_case, group=group) for group in ("merged", *dataset.class_names.values())
    )
    header = (f"# SparseSeg demo\n\n{len(cases)} volumes, annotation `{annotation}`, method `{method}` "
              + (f"({rounds} rounds planned, see rounds.md) " if method == "gradual" else "")
              + f"({network.upper()}), budget `{budget}`. Metrics of the full result against the full reference "
              f"label (HD95/ASSD in mm).\n\n")
    written["metrics"] = out / "metrics.md"
    written["metrics"].write_text(header + table + "\n")
    (out / "metrics.json").write_text(json.dumps({"per_case": per_case, "summary": summary}, indent=1))
    first = cases[0]
    merged = per_case[first.case_id]["merged"] if "merged" in per_case[first.case_id] else per_case[first.case_id]["mean"]
    written["picture"] = save_case_picture(
        first, results[first.case_id], out / "picture.png",
        title=f"{first.case_id}: `{annotation}` annotation -> {method} ({network.upper()})",
        metrics_text=f"Dice {merged['dice']:.3f}, HD95 {merged['hd95']:.1f} mm",
    )
    headline = summary.get("merged", summary["mean"])["dice"]
    reporter.log(f"mean Dice (merged label) over {len(cases)} volumes: {headline['mean']:.3f} ± {headline['sd']:.3f}; "
                 f"done in {format_duration(time.perf_counter() - started)}")
    return written


def _gradual_rounds(cases, options, reporter, out: Path, annotation: str, network: str):
    """Run Gradual Learning round by round: per-round Dice and labelled fraction, and ``rounds.png``."""
    from .methods.gradual import GradualLearning

    method = GradualLearning()
    history, pictures = [], []
    labels: dict = {}
    first = cases[0]
    for result in method.run_rounds(cases, options, reporter):
        labels = result.labels
        scores = [case_metrics(labels[c.case_id], c.label, c.geometry.spacing_kji, c.class_names) for c in cases]
        dice = float(np.mean([s.get("merged", s.get("mean"))["dice"] for s in scores]))
        row = {"round": result.index, "gl_repetition": result.metrics["gl_repetition"],
               "labelled_fraction": result.metrics["labelled_fraction"], "step": result.metrics["step"],
               "pseudo_labelled_voxels": result.metrics["pseudo_labelled_voxels"], "mean_dice": dice,
               "seconds": result.metrics["seconds"]}
        history.append(row)
        pictures.append((method.loop.targets[0].copy(), labels[first.case_id].copy(), row))
        reporter.log(f"demo round {result.index}/{result.total}: {row['labelled_fraction']:.0%} of the voxels labelled "
                     f"(ground truth + pseudo-labels), mean Dice {dice:.3f}, {row['seconds']:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Gradual Learning, round by round ({len(cases)} volumes, `{annotation}`, {network.upper()}, "
             f"step {history[0]['step']} slice(s) per round)", "",
             "| round | GL repetition | labelled (GT + pseudo) | pseudo-labelled voxels | mean Dice (merged) | s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['round']} | {r['gl_repetition']} | {r['labelled_fraction']:.0%} | {r['pseudo_labelled_voxels']} | "
              f"{r['mean_dice']:.3f} | {r['seconds']:.0f} |" for r in history]
    (out / "rounds.md").write_text("\n".join(lines) + "\n")
    save_rounds_picture(first, pictures, out / "rounds.png")
    return method.loop.segmenter, labels, history


def save_rounds_picture(case, pictures, path: Path) -> Path:
    """One row per round: the training target (GT + pseudo-labels, unknown dark) and the result, on a
    cross-section through the annotated slice (the growth is vertical there) and on a slice away from it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .visualize import _overlay

    depth = case.image.shape[0]
    counts = case.annotated.reshape(depth, -1).sum(1)
    annotated_slice = int(np.argmax(counts))
    other = int(min(depth - 1, annotated_slice + max(2, depth // 4)))
    column = case.image.shape[1] // 2
    foreground = np.flatnonzero(case.label.any(axis=(0, 2)))
    if foreground.size:
        column = int(foreground[foreground.size // 2])
    titles = [f"training target, cross-section j={column}", f"result, cross-section j={column}",
              f"result, slice {other}", "reference (cross-section, slice)"]
    rows = len(pictures)
    figure, axes = plt.subplots(rows, 4, figsize=(10.4, 2.3 * rows), dpi=90, squeeze=False)
    for row, (target, result, info) in enumerate(pictures):
        cross = lambda volume: np.take(volume, column, axis=1)  # noqa: E731
        panels = [(cross(case.image), np.maximum(cross(target), 0), cross(target) < 0),
                  (cross(case.image), cross(result), None),
                  (case.image[other], result[other], None)]
        if row == 0:
            panels.append((cross(case.image), cross(case.label), None))
        elif row == 1:
            panels.append((case.image[other], case.label[other], None))
        for index, (image, label, unknown) in enumerate(panels):
            _overlay(axes[row, index], image, label, unknown, case.class_colors)
            if row == 0:
                axes[row, index].set_title(titles[index], fontsize=8)
        for index in range(len(panels), 4):
            axes[row, index].axis("off")
        axes[row, 0].set_ylabel(f"round {info['round']}\n{info['labelled_fraction']:.0%} labelled\n"
                                f"Dice {info['mean_dice']:.3f}", fontsize=8)
    figure.suptitle(f"{case.case_id}: Gradual Learning from slice {annotated_slice}, round by round "
                    "(dark = unknown, not used for training)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
