"""The painted object's intensity window (``propagate``'s ``intensity_window``) and the CT-like copy the benchmarks
play (``python -m SparseSegLib.benchmarks.ct_like``), on the bundled real sample scans."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SparseSegLib.benchmarks.ct_like import ct_like, main
from SparseSegLib.engine.preprocessing import object_window
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods.propagate.settings import PropagateSettings
from SparseSegLib.methods.propagate.volume import PaintedVolume


def test_the_window_is_the_objects_quantiles_widened_on_each_side():
    values = np.linspace(10.0, 20.0, 10001)
    low, high = object_window(values, 1.0, tail=0.0)
    assert (low, high) == pytest.approx((0.0, 30.0))
    low, high = object_window(values, 0.5, tail=0.005)  # 10.05 .. 19.95, width 9.9
    assert (low, high) == pytest.approx((10.05 - 4.95, 19.95 + 4.95))
    with pytest.raises(SparseSegError, match="no painted object voxels"):
        object_window(np.array([]), 1.0)


def test_a_ct_like_copy_keeps_the_order_of_intensities_and_spreads_the_tails(sample_case):
    image = sample_case.image.astype(np.float32)
    moved = ct_like(image, low=0.1, high=0.03, jump=5.0)
    order = np.argsort(image, axis=None, kind="stable")
    assert np.all(np.diff(moved.ravel()[order]) >= 0)  # monotone: no two voxels swap
    band = np.quantile(image, 0.97) - np.quantile(image, 0.1)
    assert moved.std() > 3 * image.std()  # the z-score's unit is now the tails'
    assert moved.max() - image.max() == pytest.approx(5.0 * band, rel=1e-5)


def test_the_window_gives_back_the_painted_contrast_that_ct_tails_take(sample_case):
    """On a CT-like copy the whole-crop z-score shrinks the contrast between the painted object and the tissue next
    to it that lies in the band (not air or bone); clipping to the object's window first restores it."""
    label, image = sample_case.label, sample_case.image.astype(np.float32)
    present = np.flatnonzero((label > 0).any(axis=(1, 2)))
    middle = int((present[0] + present[-1]) // 2)
    annotated = np.zeros(label.shape, bool)
    annotated[middle] = True
    floor, ceiling = np.quantile(image, [0.1, 0.97])
    in_band = (image >= floor) & (image <= ceiling)

    def contrast(case, window: float) -> float:
        volume = PaintedVolume.from_case(case.with_annotation(annotated), PropagateSettings(intensity_window=window))
        crop = (middle,) + volume.window
        painted, normalised = volume.label[middle], volume.image[middle]
        neighbours = ndimage.binary_dilation(painted > 0, iterations=3) & (painted == 0) & in_band[crop]
        return float(np.median(np.abs(normalised[neighbours] - np.median(normalised[painted > 0]))))

    ct_case = replace(sample_case, image=ct_like(image))
    original, squashed, windowed = contrast(sample_case, 0.0), contrast(ct_case, 0.0), contrast(ct_case, 1.0)
    assert squashed < 0.5 * original  # what CT's dynamic range does to a whole-crop z-score
    assert windowed > 0.8 * original  # and what the window gives back
    assert contrast(sample_case, 1.0) > 0.8 * original  # on the MRI itself it costs nothing


def test_the_option_is_checked(sample_case):
    with pytest.raises(SparseSegError, match="intensity_window"):
        PropagateSettings.parse({"intensity_window": "-1"})


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
