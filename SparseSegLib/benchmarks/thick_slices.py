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
import json
import sys
from pathlib import Path

import SimpleITK as sitk

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
    if args.mni152 is not None:  # the template: t1.nii.gz + tissue.nii.gz, same names in the copy
        copy_pair(args.mni152, args.out, "t1.nii.gz", "tissue.nii.gz", args.slice)
        print(f"wrote the template with {args.slice:g} mm slices to {args.out}")
        return 0
    meta = json.loads((args.dataset / "dataset.json").read_text())
    for entry in meta["training"]:
        copy_pair(args.dataset, args.out, entry["image"], entry["label"], args.slice)
    meta["description"] = f"{meta.get('description', '')}; SparseSeg thick-slice copy, {args.slice:g} mm slices"
    if "spacing_mm" in meta:
        meta["spacing_mm"] = [meta["spacing_mm"][0], meta["spacing_mm"][1], args.slice]
    (args.out / "dataset.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {len(meta['training'])} scans with {args.slice:g} mm slices to {args.out}")
    return 0


def copy_pair(source: Path, out: Path, image_name: str, label_name: str, slice_mm: float) -> None:
    """``source``'s image and label (paths relative to it) with ``slice_mm`` slices, at the same paths under ``out``."""
    image = sitk.ReadImage(str(source / image_name), sitk.sitkFloat32)
    label = sitk.ReadImage(str(source / label_name))
    for name, written in zip((image_name, label_name), thick_copy(image, label, slice_mm)):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(written, str(out / name))


if __name__ == "__main__":
    sys.exit(main())
