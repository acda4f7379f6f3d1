"""The thick-slice copy the benchmarks play (``python -m SparseSegLib.benchmarks.thick_slices``), on the bundled
sample folder: fewer, thicker slices over the same extent, the in-plane grid kept, labels only from the originals."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from SparseSegLib.benchmarks.thick_slices import main


def test_a_thick_copy_keeps_the_extent_the_pixels_and_the_label_values(sample_dir, tmp_path):
    assert main(["--dataset", str(sample_dir), "--slice", "3", "--out", str(tmp_path / "thick")]) == 0
    meta = json.loads((sample_dir / "dataset.json").read_text())
    copied = json.loads((tmp_path / "thick" / "dataset.json").read_text())
    assert len(copied["training"]) == len(meta["training"]) and "3 mm slices" in copied["description"]
    entry = meta["training"][0]
    read = {key: (sitk.ReadImage(str(sample_dir / entry[key])), sitk.ReadImage(str(tmp_path / "thick" / entry[key])))
            for key in ("image", "label")}
    for original, thick in read.values():
        assert thick.GetSpacing()[:2] == original.GetSpacing()[:2] and thick.GetSpacing()[2] == 3.0
        assert thick.GetSize()[:2] == original.GetSize()[:2]
        assert thick.GetSize()[2] == round(original.GetSize()[2] * original.GetSpacing()[2] / 3.0)
        assert thick.GetOrigin() == original.GetOrigin() and thick.GetDirection() == original.GetDirection()
    original_label, thick_label = (sitk.GetArrayFromImage(image) for image in read["label"])
    assert set(np.unique(thick_label)) <= set(np.unique(original_label)) and thick_label.any()


def test_a_thick_copy_of_a_template_folder_keeps_its_file_names(sample_dir, tmp_path):
    """``--mni152 DIR``: a folder holding t1.nii.gz and tissue.nii.gz (here a real sample case written that way)."""
    meta = json.loads((sample_dir / "dataset.json").read_text())
    template = tmp_path / "template"
    template.mkdir()
    entry = meta["training"][0]
    for key, name in (("image", "t1.nii.gz"), ("label", "tissue.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(sample_dir / entry[key])), str(template / name))
    assert main(["--mni152", str(template), "--slice", "2", "--out", str(tmp_path / "thick")]) == 0
    original, thick = (sitk.ReadImage(str(folder / "tissue.nii.gz")) for folder in (template, tmp_path / "thick"))
    assert thick.GetSpacing()[2] == 2.0 and thick.GetSize()[:2] == original.GetSize()[:2]
    assert sitk.ReadImage(str(tmp_path / "thick" / "t1.nii.gz")).GetSize() == thick.GetSize()
