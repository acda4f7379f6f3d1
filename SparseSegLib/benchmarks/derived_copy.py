"""Writing a derived copy of an MSD-style folder or of the mni152 template folder: what the thick-slice and CT-like
benchmark copies share (the folder walk, the file names, dataset.json); each supplies only how a pair changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

#: ``(image, label) -> (image, label)``: how a copy changes one scan (SimpleITK images, the image as float32).
PairChange = Callable[[sitk.Image, sitk.Image], tuple[sitk.Image, sitk.Image]]

TEMPLATE_FILES = ("t1.nii.gz", "tissue.nii.gz")


def copy_pair(source: Path, out: Path, image_name: str, label_name: str, change: PairChange) -> None:
    """``source``'s image and label (paths relative to it) changed by ``change``, at the same paths under ``out``."""
    image = sitk.ReadImage(str(source / image_name), sitk.sitkFloat32)
    label = sitk.ReadImage(str(source / label_name))
    for name, written in zip((image_name, label_name), change(image, label)):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(written, str(out / name))


def write_copy(dataset: Path, template: Path | None, out: Path, change: PairChange, note: str,
               meta_change: Callable[[dict], None] | None = None) -> int:
    """Copy the ``template`` folder (t1.nii.gz + tissue.nii.gz, same names in the copy) when given, else every
    training pair of the MSD folder ``dataset`` with its dataset.json (``note`` added to its description,
    ``meta_change`` applied); returns the number of scans written."""
    if template is not None:
        copy_pair(template, out, *TEMPLATE_FILES, change)
        return 1
    meta = json.loads((dataset / "dataset.json").read_text())
    for entry in meta["training"]:
        copy_pair(dataset, out, entry["image"], entry["label"], change)
    meta["description"] = f"{meta.get('description', '')}; {note}"
    if meta_change is not None:
        meta_change(meta)
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))
    return len(meta["training"])
