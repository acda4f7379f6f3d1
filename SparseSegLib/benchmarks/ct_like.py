"""A copy of an MSD-style data set with CT's dynamic range: what the Start default meets on CT, made from MRI.

    python -m SparseSegLib.benchmarks.ct_like --dataset ../shared/data/left_atrium --out DIR
    python -m SparseSegLib.benchmarks.ct_like --mni152 --out DIR   # the template (t1 + tissue)

Every scan here is MRI. In CT most of a crop around a soft-tissue organ sits in a narrow band (fat -100 HU, organs
30-80 HU), while air (-1000 HU) and bone (300-1500 HU) lie several band widths away. A whole-crop z-score then
spends its unit on air against bone and leaves the organ's own contrast a small fraction of it. This copy makes
that regime from real scans with a monotone map: the darkest ``--low`` and brightest ``--high`` fraction of each
scan's voxels are shifted ``--jump`` times the width of the band between them further out (the order of all
intensities, the anatomy and the labels are untouched). The interactive benchmark and ``propagate_dev`` play the
copy like any folder; docs/results/interactive.md ("Twenty-fourth session") has the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .derived_copy import write_copy
from .interactive.scans import DATA_ROOT


def ct_like(image: np.ndarray, low: float = 0.10, high: float = 0.03, jump: float = 5.0) -> np.ndarray:
    """``image`` with its darkest ``low`` and brightest ``high`` fraction of voxels moved ``jump`` band widths
    further out (the band: the intensities between those two quantiles). Monotone: no two voxels swap order."""
    values = np.asarray(image, dtype=np.float32)
    floor, ceiling = (float(q) for q in np.quantile(values, [low, 1.0 - high]))
    shift = jump * max(ceiling - floor, 1e-6)
    out = values.copy()
    out[values < floor] -= shift
    out[values > ceiling] += shift
    return out


def ct_like_pair(image: sitk.Image, label: sitk.Image, **tails: float) -> tuple[sitk.Image, sitk.Image]:
    """``image`` made CT-like (:func:`ct_like`, geometry kept) and ``label`` as it is."""
    moved = sitk.GetImageFromArray(ct_like(sitk.GetArrayFromImage(image), **tails))
    moved.CopyInformation(image)
    return moved, label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.ct_like", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA_ROOT / "left_atrium", help="MSD-style folder")
    parser.add_argument("--mni152", nargs="?", const=DATA_ROOT / "mni152", type=Path, default=None, metavar="DIR",
                        help="copy the mni152 template folder (t1.nii.gz, tissue.nii.gz) instead of --dataset")
    parser.add_argument("--low", type=float, default=0.10, help="darkest fraction moved down, as air (default 0.10)")
    parser.add_argument("--high", type=float, default=0.03, help="brightest fraction moved up, as bone (default 0.03)")
    parser.add_argument("--jump", type=float, default=5.0, help="how far, in band widths (default 5)")
    parser.add_argument("--out", type=Path, required=True, help="the new folder")
    args = parser.parse_args(argv)
    tails = {"low": args.low, "high": args.high, "jump": args.jump}
    written = write_copy(args.dataset, args.mni152, args.out, lambda image, label: ct_like_pair(image, label, **tails),
                         f"SparseSeg CT-like copy (low {args.low:g}, high {args.high:g}, jump {args.jump:g})")
    print(f"wrote {written} CT-like scan(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
