"""The CT-like copy the benchmarks play (``python -m SparseSegLib.benchmarks.ct_like``), on the bundled real sample
scans: the order of intensities kept, the tails moved out, geometry and labels untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SparseSegLib.benchmarks.ct_like import ct_like, main


def test_a_ct_like_copy_keeps_the_order_of_intensities_and_spreads_the_tails(sample_case):
    image = sample_case.image.astype(np.float32)
    moved = ct_like(image, low=0.1, high=0.03, jump=5.0)
    order = np.argsort(image, axis=None, kind="stable")
    assert np.all(np.diff(moved.ravel()[order]) >= 0)  # monotone: no two voxels swap
    band = np.quantile(image, 0.97) - np.quantile(image, 0.1)
    assert moved.std() > 3 * image.std()  # the z-score's unit is now the tails'
    assert moved.max() - image.max() == pytest.approx(5.0 * band, rel=1e-5)


def test_a_ct_like_copy_of_a_folder_keeps_geometry_and_labels(sample_dir, tmp_path):
    assert main(["--dataset", str(sample_dir), "--out", str(tmp_path / "ct")]) == 0
    meta = json.loads((sample_dir / "dataset.json").read_text())
    copied = json.loads((tmp_path / "ct" / "dataset.json").read_text())
    assert len(copied["training"]) == len(meta["training"]) and "CT-like" in copied["description"]
    entry = meta["training"][0]
    for key in ("image", "label"):
        original, copy = (sitk.ReadImage(str(folder / entry[key])) for folder in (sample_dir, tmp_path / "ct"))
        assert copy.GetSize() == original.GetSize() and copy.GetSpacing() == original.GetSpacing()
        assert copy.GetOrigin() == original.GetOrigin()
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / entry["label"]))) for folder in (sample_dir, tmp_path / "ct")]
    np.testing.assert_array_equal(*labels)
