"""Issue 16's benchmark on the left atrium: collaborative learning next to the paper's Table 2, at a CPU scale.

* The segmentation figures are plain ``sparseseg bench`` runs (``make bench-collaborative`` lists them, each run
  folder keeps its command in ``command.txt``); the data is the mean-teacher benchmark's reduced copy
  (``python -m SparseSegLib.benchmarks.mean_teacher prepare``: 1.25 mm instead of 0.625 mm).
* ``registration``: the registration branch on its own: the training volumes' central slices carried through their
  volumes by the registration network (the method's defaults, trained on the same 64 training volumes) and by
  demons, against copying the central label unchanged; Dice of every slice's propagated label against its true
  label, by distance from the central slice (a table, JSON and a PNG). It reads the full labels, which the method
  never does: it is an evaluation.
* ``report``: one Markdown table (B-IoU % (SparseSegLib.metrics: 2 mm boundary band), IoU %, DSC %, ASSD mm, |RAVD|, mean +- sd over the test volumes, train time,
  command) from the runs' ``results.json``, beside the paper's Table 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

#: The paper's Table 2 (left atrium, 80 train / 20 test): B-IoU %, DSC %, ASSD mm, RAVD (mean +- sd).
PAPER_TABLE_2 = {
    "FS-LCS": "55.7 ± 28.1 | 66.3 ± 30.9 | 4.57 ± 5.53 | 0.37 ± 0.33",
    "Ours (collaborative)": "66.1 ± 6.8 | 79.4 ± 5.1 | 2.95 ± 0.78 | 0.15 ± 0.12",
    "FS (full supervision)": "75.1 ± 5.7 | 85.6 ± 3.8 | 1.04 ± 0.20 | 0.05 ± 0.03",
}


def _train_cases(data: Path, seed: int, split: tuple[float, float, float]):
    from ..annotation import annotate_case
    from ..dataset import load_dataset, split_cases

    dataset = load_dataset(data)
    part = split_cases([ref.case_id for ref in dataset.cases], split, seed)
    by_id = {ref.case_id: ref for ref in dataset.cases}
    return [annotate_case(dataset.load(by_id[c]), "central-slice", seed) for c in part["train"]]


def slice_dice(predicted: np.ndarray, truth: np.ndarray) -> float | None:
    """Dice of one slice's object; None when neither has any (nothing to score)."""
    total = int(predicted.sum() + truth.sum())
    return None if total == 0 else 2.0 * float((predicted & truth).sum()) / total


def registration_by_distance(data: Path, out: Path, seed: int = 0, split=(0.8, 0.0, 0.2), max_distance: int = 20,
                             reg_iterations: int = 200, volumes: int = 0) -> dict:
    """Per-slice Dice of the propagated central label by distance, for network, demons and copying; writes files.

    The network trains on every training volume (as the method does); propagation is scored on the first
    ``volumes`` of them (0: all; measured: 52.6 s of demons for 12 volumes of 44 slices on one thread)."""
    from ..engine.device import select_device
    from ..engine.propagation import PropagationSettings, demons_levels_for, propagate_slices
    from ..engine.registration_network import NetworkSliceRegistration, train_registration
    from ..methods.collaborative.branches import scan_of
    from ..methods.collaborative.settings import CollaborativeSettings

    settings = CollaborativeSettings(reg_iterations=reg_iterations)
    cases = _train_cases(data, seed, split)
    scans = [scan_of(case, "zscore") for case in cases]
    device = select_device("cpu")
    started = time.perf_counter()
    network, losses = train_registration([s.image for s in scans], settings.registration_config(), device, seed)
    train_seconds = time.perf_counter() - started
    rows: dict[str, dict[int, list[float]]] = {"network": {}, "demons": {}, "copy": {}}
    volume_dice: dict[str, list[float]] = {name: [] for name in rows}
    seconds = {"network": train_seconds, "demons": 0.0, "copy": 0.0}
    scored = list(zip(cases, scans))[: volumes or None]
    for case, scan in scored:
        truth = case.label > 0
        centre = scan.painted[0]
        for name in rows:
            tick = time.perf_counter()
            if name == "copy":
                predicted = np.broadcast_to(truth[centre], truth.shape)
            else:
                registration = NetworkSliceRegistration(network, scan.image, device) if name == "network" else None
                probabilities = propagate_slices(scan.image, scan.ground_truth, scan.painted, case.num_classes,
                                                 PropagationSettings(settings.demons_iterations, settings.demons_smoothing,
                                                                     levels=demons_levels_for(scan.spacing_kji)),
                                                 registration=registration)
                predicted = probabilities.argmax(0) > 0
            seconds[name] += time.perf_counter() - tick
            volume_dice[name].append(2.0 * float((predicted & truth).sum()) / max(1, int(predicted.sum() + truth.sum())))
            for index in range(truth.shape[0]):
                distance = abs(index - centre)
                score = slice_dice(predicted[index], truth[index])
                if score is not None and distance <= max_distance:
                    rows[name].setdefault(distance, []).append(score)
    result = {
        "data": str(data), "seed": seed, "split": list(split), "train_volumes": len(cases), "scored_volumes": len(scored),
        "registration_network": {"iterations": reg_iterations, "first_loss": float(np.mean(losses[:10])),
                                 "final_loss": float(np.mean(losses[-25:]))},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "volume_dice": {k: {"mean": float(np.mean(v)), "sd": float(np.std(v))} for k, v in volume_dice.items()},
        "by_distance": {name: {str(d): {"mean": float(np.mean(v)), "n": len(v)} for d, v in sorted(table.items())}
                        for name, table in rows.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "registration_by_distance.json").write_text(json.dumps(result, indent=1))
    (out / "registration_by_distance.md").write_text(distance_table(result))
    _plot(result, out / "registration_by_distance.png")
    return result


def distance_table(result: dict) -> str:
    names = list(result["by_distance"])
    lines = ["| slices from the central slice | " + " | ".join(f"{n} Dice" for n in names) + " | slices scored |",
             "|---|" + "---|" * (len(names) + 1)]
    distances = sorted({int(d) for table in result["by_distance"].values() for d in table})
    for d in distances:
        cells = [result["by_distance"][n].get(str(d), {}) for n in names]
        lines.append(f"| {d} | " + " | ".join(f"{c['mean']:.3f}" if c else "" for c in cells)
                     + f" | {max(c.get('n', 0) for c in cells)} |")
    lines.append("| whole volume (3D Dice) | " + " | ".join(
        f"{result['volume_dice'][n]['mean']:.3f} ± {result['volume_dice'][n]['sd']:.3f}" for n in names) + " | |")
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, table in result["by_distance"].items():
        distances = sorted(int(d) for d in table)
        axes.plot(distances, [table[str(d)]["mean"] for d in distances], marker="o", markersize=3, label=name)
    axes.set_xlabel("slices from the labelled central slice")
    axes.set_ylabel("mean slice Dice vs. true label")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    name = Path(result["data"]).name if "hippocampus" in str(result["data"]).lower() else "Left atrium"
    axes.set_title(f"{name}: central label propagated ({result['scored_volumes']} training volumes)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report(runs: list[Path], hd95: bool = False, paper: bool = True) -> str:
    """A Markdown table in the paper's units, one row per run of every ``results.json`` under ``runs`` (``hd95``: an
    HD95 mm column too, as the hippocampus tables have; ``paper``: the paper's LA Table 2 below)."""
    parts = {json.loads((f / "results.json").read_text())["config"].get("evaluate", "test")
             for f in runs if (f / "results.json").is_file()}
    lines = [f"| run | {'/'.join(sorted(parts)) or 'test'} volumes | B-IoU % (2 mm band) | IoU % | DSC % | "
             f"{'HD95 mm | ' if hd95 else ''}ASSD mm | RAVD (abs) | train time | command |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if hd95 else "")]
    for folder in runs:
        path = folder / "results.json"
        if not path.is_file():
            lines.append(f"| {folder.name} | (not run or not finished) | | | | | | | |")
            continue
        results = json.loads(path.read_text())
        command = (folder / "command.txt").read_text().strip() if (folder / "command.txt").is_file() else ""
        group = results["headline_group"]
        for name, run in results["runs"].items():
            scores = [case[group] for case in run["cases"].values()]

            def cell(metric: str, scale: float = 1.0, absolute: bool = False) -> str:
                values = np.array([s[metric] for s in scores], dtype=float)
                values = np.abs(values) if absolute else values
                return f"{scale * np.nanmean(values):.2f} ± {scale * np.nanstd(values):.2f}"

            lines.append(f"| {name} | {len(scores)} | {cell('boundary_iou', 100)} | {cell('iou', 100)} | {cell('dice', 100)} | "
                         f"{cell('hd95') + ' | ' if hd95 else ''}{cell('assd')} | "
                         f"{cell('ravd', absolute=True)} | {run['train_seconds'] / 60:.1f} min | `{command}` |")
    if not paper:
        return "\n".join(lines) + "\n"
    lines += ["", "| paper (Table 2, LA, 80 train / 20 test, 0.625 mm, GPU) | B-IoU % | DSC % | ASSD mm | RAVD |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {row} |" for name, row in PAPER_TABLE_2.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.collaborative", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    distance = commands.add_parser("registration", help="registration Dice by distance from the central slice")
    distance.add_argument("--data", type=Path, required=True, help="the reduced MSD folder (mean_teacher prepare)")
    distance.add_argument("--out", type=Path, required=True)
    distance.add_argument("--seed", type=int, default=0)
    distance.add_argument("--split", default="0.8,0,0.2")
    distance.add_argument("--reg-iterations", type=int, default=200)
    distance.add_argument("--volumes", type=int, default=0, help="score propagation on the first N training volumes (0: all)")
    table = commands.add_parser("report", help="Markdown table of run folders next to the paper's Table 2")
    table.add_argument("runs", nargs="+", type=Path)
    table.add_argument("--hd95", action="store_true", help="an HD95 mm column too (the hippocampus tables' metric)")
    table.add_argument("--no-paper", action="store_true", help="leave out the paper's LA Table 2 (other data sets)")
    args = parser.parse_args(argv)
    if args.command == "registration":
        torch.set_num_threads(1)
        result = registration_by_distance(args.data, args.out, args.seed, tuple(float(v) for v in args.split.split(",")),
                                          reg_iterations=args.reg_iterations, volumes=args.volumes)
        print(distance_table(result))
        print(json.dumps({"seconds": result["seconds"], "registration_network": result["registration_network"]}))
    else:
        print(report(args.runs, hd95=args.hd95, paper=not args.no_paper))
    return 0


if __name__ == "__main__":
    sys.exit(main())
