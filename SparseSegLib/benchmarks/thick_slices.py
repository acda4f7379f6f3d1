"""A thick-slice copy of an MSD-style data set: what the Start default meets on clinical MRI and CT, whose slices
often lie 2.5-5 mm apart under sub-millimetre pixels, made from scans with (nearly) isotropic voxels.

    python -m SparseSegLib.benchmarks.thick_slices --dataset ../shared/data/left_atrium --slice 2.5 --out DIR
    python -m SparseSegLib.benchmarks.thick_slices --mni152 --slice 5 --out DIR   # the template (t1 + tissue)

In-plane pixels are kept. Along k each image is smoothed with a Gaussian whose FWHM is one new slice (the slice's
thickness, as an acquisition integrates over it), then sampled every ``--slice`` mm; labels are taken by nearest
neighbour at the new slice centres. The interactive benchmark plays the copy like any folder (``--dataset DIR``);
docs/results/interactive.md ("Nineteenth session", "Twentieth session") has the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import SimpleITK as sitk

from .derived_copy import write_copy
from .interactive.scans import DATA_ROOT

FWHM_PER_SIGMA = 2.355


def thick_copy(image: sitk.Image, label: sitk.Image, slice_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """``image`` and ``label`` resampled to ``slice_mm`` between slices along k (the image is first blurred along
    k by one slice's thickness); the in-plane grid, origin and direction are kept."""
    spacing = (image.GetSpacing()[0], image.GetSpacing()[1], float(slice_mm))
    size = [image.GetSize()[0], image.GetSize()[1], int(round(image.GetSize()[2] * image.GetSpacing()[2] / slice_mm))]
    blurred = sitk.SmoothingRecursiveGaussian(image, [1e-3, 1e-3, slice_mm / FWHM_PER_SIGMA])
    grid = (size, sitk.Transform())
    thick_image = sitk.Resample(blurred, *grid, sitk.sitkLinear, image.GetOrigin(), spacing, image.GetDirection(), 0.0,
                                sitk.sitkFloat32)
    thick_label = sitk.Resample(label, *grid, sitk.sitkNearestNeighbor, image.GetOrigin(), spacing,
                                image.GetDirection(), 0, label.GetPixelID())
    return thick_image, thick_label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.thick_slices",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA_ROOT / "left_atrium", help="MSD-style folder")
    parser.add_argument("--slice", type=float, default=2.5, help="mm between the copy's slices (default 2.5)")
    parser.add_argument("--mni152", nargs="?", const=DATA_ROOT / "mni152", type=Path, default=None, metavar="DIR",
                        help="copy the mni152 template folder (t1.nii.gz, tissue.nii.gz) instead of --dataset; the "
                             "interactive benchmark plays the copy with --cases 0 --mni152 OUT")
    parser.add_argument("--out", type=Path, required=True, help="the new folder")
    args = parser.parse_args(argv)

    def spacing(meta: dict) -> None:
        if "spacing_mm" in meta:
            meta["spacing_mm"] = [meta["spacing_mm"][0], meta["spacing_mm"][1], args.slice]

    written = write_copy(args.dataset, args.mni152, args.out, lambda image, label: thick_copy(image, label, args.slice),
                         f"SparseSeg thick-slice copy, {args.slice:g} mm slices", spacing)
    print(f"wrote {written} scan(s) with {args.slice:g} mm slices to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
