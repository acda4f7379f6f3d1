"""Quick development sweep of ``propagate`` on the interactive benchmark's *dev* scans (never its report scans).

Runs the Start stage (one painted central slice along k) in-process, no worker, and prints the merged-foreground
Dice, the class-mean Dice and RAVD of every round per scan and the mean per round: what the settings of the single-scan default were
chosen with (docs/results/interactive.md lists each run). The interactive benchmark proper plays the module's
user through real worker jobs and corrections; this is its fast inner loop for comparing options::

    OMP_NUM_THREADS=1 python -m SparseSegLib.benchmarks.propagate_dev --dataset left_atrium --cases 3 \\
        --option fusion=average --option network_axes=0,1,2 [--first-round-only]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .interactive.scans import DATA_ROOT, central_slice, choose_scans, even_slices, mni152_scan, slice_at


def merged_scores(labels: np.ndarray, reference: np.ndarray, spacing) -> tuple[float, float]:
    """Dice and RAVD of all foreground classes as one (the sweep's quick figure; the benchmark keeps every class)."""
    from ..metrics import binary_metrics

    figures = binary_metrics(labels > 0, reference > 0, spacing)
    return float(figures["dice"]), float(figures["ravd"])


def class_mean_dice(labels: np.ndarray, reference: np.ndarray, spacing) -> float:
    """Dice per foreground class of the reference, averaged (what the interactive benchmark's tables report)."""
    from ..metrics import binary_metrics

    classes = [int(c) for c in np.unique(reference) if c > 0]
    return float(np.mean([binary_metrics(labels == c, reference == c, spacing)["dice"]
                          for c in classes]))


def painted_case(scan, slices: int = 1, past_end: int = 0, at: float | None = None):
    """``(case, reference)``: the scan with ``slices`` whole slices along k painted (1: the central one, more:
    evenly over the object's extent; ``at``: the one slice at that fraction of the extent instead, 0 its first
    slice, 1 its last), plus an empty slice ``past_end`` slices past its end when given."""
    case = scan.load()
    reference = case.label.copy()
    annotated = np.zeros(reference.shape, bool)
    if at is not None:
        chosen = [slice_at(reference, at)]
    else:
        chosen = even_slices(reference, slices) if slices > 1 else [central_slice(reference)]
    for index in chosen:
        annotated[index] = True
    if past_end:
        annotated[past_end_slice(reference, past_end)] = True
    return case.with_annotation(annotated), reference


def past_end_slice(reference: np.ndarray, distance: int) -> int:
    """The slice ``distance`` slices past the object's end along k: beyond its last slice, or before its first
    where the volume ends too soon on that side."""
    present = np.flatnonzero((reference > 0).any(axis=(1, 2)))
    high = int(present[-1]) + distance
    return high if high < reference.shape[0] else max(int(present[0]) - distance, 0)


def main(argv: list[str] | None = None) -> int:
    import torch

    from ..cli_options import parse_options
    from ..methods import get_method
    from ..methods.base import MethodOptions, SilentReporter

    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.propagate_dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="hippocampus",
                        help="a folder under ../shared/data or a path; mni152 (or a folder holding t1.nii.gz and "
                             "tissue.nii.gz): the template's tissue map (one scan)")
    parser.add_argument("--cases", type=int, default=5, help="dev scans (at most the dev part's 5)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a propagate option")
    parser.add_argument("--slices", type=int, default=1,
                        help="painted slices, evenly spread over the object's extent along k (1: the central one)")
    parser.add_argument("--past-end", type=int, default=0, metavar="D",
                        help="also paint an empty slice D slices past the object's end along k (a user marking where "
                             "it ends; the high end, or the low end where the volume stops first)")
    parser.add_argument("--at", type=float, default=None, metavar="F",
                        help="paint the one slice at fraction F of the object's extent along k instead (0: its first "
                             "slice, 0.5: about the central one, 1: its last)")
    parser.add_argument("--first-round-only", action="store_true", help="stop after the registration round")
    args = parser.parse_args(argv)
    if args.at is not None and not 0.0 <= args.at <= 1.0:
        parser.error("--at takes a fraction from 0 to 1")
    torch.set_num_threads(1)
    folder = DATA_ROOT / args.dataset if not args.dataset.startswith(("/", ".")) else args.dataset
    options = MethodOptions(device="cpu", extra=parse_options(args.option), rounds=None)
    per_scan = []
    template = Path(folder) / "t1.nii.gz"  # the mni152 folder or a copy of it (benchmarks.thick_slices, ct_like)
    scans = [mni152_scan(folder)] if template.is_file() else choose_scans(folder, "dev", args.cases)
    for scan in scans:
        case, reference = painted_case(scan, args.slices, args.past_end, args.at)
        started, scores = time.perf_counter(), []
        for result in get_method("propagate").run_rounds([case], options, SilentReporter()):
            labels = result.labels[case.case_id]
            scores.append(merged_scores(labels, reference, case.geometry.spacing_kji) + (class_mean_dice(labels, reference, case.geometry.spacing_kji),))
            if args.first_round_only:
                break
        per_scan.append([(d, c) for d, _, c in scores])
        print(f"  {scan.case_id}: Dice " + " ".join(f"{d:.3f}" for d, _, _ in scores)
              + " class mean " + " ".join(f"{c:.3f}" for _, _, c in scores)
              + f", RAVD {scores[-1][1]:+.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
    means = np.mean(np.array(per_scan), axis=0)
    print(f"{args.dataset} dev x{len(per_scan)}, {f'1 slice at {args.at:g} of the extent' if args.at is not None else f'{args.slices} slice(s)'}{f' + empty {args.past_end} past the end' if args.past_end else ''}, {' '.join(args.option) or '(defaults)'}: mean Dice per round "
          + " ".join(f"{m:.3f}" for m in means[:, 0]) + ", class mean " + " ".join(f"{m:.3f}" for m in means[:, 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
