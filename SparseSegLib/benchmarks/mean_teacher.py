"""Issue 17's benchmark on the left atrium: Mean Teacher / UA-MT next to the papers, at a CPU scale.

Two parts, so that every figure of the report comes from one plain ``sparseseg bench`` command:

* ``prepare``: the scale reduction: every case of ``../shared/data/left_atrium`` resampled to ``factor`` x its
  spacing (image: linear, label: nearest neighbour) into an MSD-style folder;
* ``report``: reads the ``results.json`` of each run folder and prints a Markdown table (Dice, Jaccard, HD95, ASD
  as mean +- sd over the test cases, train time) with the command that produced each row.

The runs themselves are ``sparseseg bench`` calls (``make bench-mean-teacher`` lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import SimpleITK as sitk

from ..bench import run_name


def downsample(image: sitk.Image, factor: float, label: bool) -> sitk.Image:
    """``image`` on a grid ``factor`` times coarser with the same origin and direction (covering the same extent)."""
    spacing = [s * factor for s in image.GetSpacing()]
    size = [max(1, int(round(n / factor))) for n in image.GetSize()]
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing, image.GetDirection(),
                         0, image.GetPixelID())


def prepare(source: Path, out: Path, factor: float) -> Path:
    """Write the reduced copy of the MSD folder ``source`` into ``out``; returns ``out``."""
    meta = json.loads((source / "dataset.json").read_text())
    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for entry in meta["training"]:
        for key, is_label in (("image", False), ("label", True)):
            target = out / entry[key]
            if not target.is_file():
                sitk.WriteImage(downsample(sitk.ReadImage(str(source / entry[key])), factor, is_label), str(target), True)
    meta["description"] = f"{meta.get('description', '')}; SparseSeg benchmark copy resampled to {factor}x spacing"
    meta["spacing_mm"] = [s * factor for s in meta.get("spacing_mm", [1, 1, 1])]
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))
    return out


def report(runs: list[Path]) -> str:
    """A Markdown table: one row per run of every ``results.json`` under ``runs``."""
    lines = ["| run | test cases | Dice % | Jaccard % | HD95 mm | ASD mm | train time | command |",
             "|---|---|---|---|---|---|---|---|"]
    for folder in runs:
        path = folder / "results.json"
        if not path.is_file():
            lines.append(f"| {folder.name} | (no results.json: not run or not finished) | | | | | | |")
            continue
        results = json.loads(path.read_text())
        command = (folder / "command.txt").read_text().strip() if (folder / "command.txt").is_file() else ""
        headline = results["headline_group"]
        for run in results["runs"].values():
            # labelled by the network the method trained (runs written before the bench knew it said the flag's)
            name = run_name(run["method"], run["network"], results["config"].get("options"))
            summary = run["summary"].get(headline, {})

            def cell(metric: str, scale: float = 1.0) -> str:
                value = summary.get(metric, {})
                return f"{scale * value.get('mean', float('nan')):.2f} +- {scale * value.get('sd', float('nan')):.2f}"

            lines.append(f"| {name} | {len(run['cases'])} | {cell('dice', 100)} | {cell('iou', 100)} | {cell('hd95')} | "
                         f"{cell('assd')} | {run['train_seconds'] / 60:.1f} min | `{command}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.mean_teacher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("prepare", help="write the reduced copy of the data set")
    make.add_argument("--dataset", type=Path, default=Path("../shared/data/left_atrium"))
    make.add_argument("--factor", type=float, default=2.0, help="spacing factor (default 2: 0.625 -> 1.25 mm)")
    make.add_argument("--out", type=Path, required=True)
    table = commands.add_parser("report", help="print the table of finished runs")
    table.add_argument("runs", nargs="+", type=Path, help="run folders (each with results.json)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        out = prepare(args.dataset, args.out, args.factor)
        shapes = [sitk.ReadImage(str(p)).GetSize() for p in sorted((out / "imagesTr").iterdir())[:3]]
        print(f"wrote {out} (first sizes i,j,k: {shapes})")
    else:
        print(report(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
