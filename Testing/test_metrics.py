"""Behaviour of SparseSegLib.metrics, checked against small cases worked out by hand.

Arrays are (k, j, i); spacing is (sk, sj, si) in mm.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from SparseSegLib.errors import SparseSegError
from SparseSegLib.metrics import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    METRIC_UNITS,
    binary_metrics,
    boundary_iou,
    boundary_region,
    case_metrics,
    format_table,
    summarize,
)

SAMPLE_LABEL = (
    Path(__file__).resolve().parents[1]
    / "Resources"
    / "SampleData"
    / "hippocampus"
    / "labelsTr"
    / "hippocampus_001.nii.gz"
)
ISOTROPIC = (1.0, 1.0, 1.0)


@contextmanager
def no_warnings():
    """Fail on any warning (MONAI warns about empty masks; the metrics must silence that)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def box(shape, k, j, i):
    """A boolean volume that is True on the slices k, j, i (each a (start, stop) pair)."""
    mask = np.zeros(shape, dtype=bool)
    mask[slice(*k), slice(*j), slice(*i)] = True
    return mask


# Reference: a 4x4x4 cube (64 voxels) in a 10^3 volume; prediction: the same cube one voxel further
# along axis 0.
REF_CUBE = box((10, 10, 10), (2, 6), (2, 6), (2, 6))
SHIFTED_K = box((10, 10, 10), (3, 7), (2, 6), (2, 6))
SHIFTED_I = box((10, 10, 10), (2, 6), (2, 6), (3, 7))


def test_metric_tables_cover_every_metric():
    assert METRIC_NAMES == ("dice", "iou", "hd95", "assd", "ravd", "tpr", "tnr", "boundary_iou")
    assert set(METRIC_UNITS) == set(HIGHER_IS_BETTER) == set(METRIC_NAMES)
    assert METRIC_UNITS["hd95"] == METRIC_UNITS["assd"] == "mm"
    assert METRIC_UNITS["dice"] == ""
    assert HIGHER_IS_BETTER["dice"] is True and HIGHER_IS_BETTER["hd95"] is False
    assert HIGHER_IS_BETTER["ravd"] is None  # signed: 0 is best


def test_dice_and_iou_of_cubes_shifted_by_one_voxel():
    # Overlap is 3x4x4 = 48 voxels; each cube has 64.
    # Dice = 2*48 / (64+64) = 0.75; IoU = 48 / (64+64-48) = 0.6.
    m = binary_metrics(SHIFTED_K, REF_CUBE, ISOTROPIC)
    assert set(m) == set(METRIC_NAMES)
    assert m["dice"] == pytest.approx(0.75)
    assert m["iou"] == pytest.approx(0.6)


def test_identical_masks_score_perfectly():
    m = binary_metrics(REF_CUBE, REF_CUBE, (3.0, 1.0, 0.5))
    assert m == pytest.approx(
        {"dice": 1, "iou": 1, "hd95": 0, "assd": 0, "ravd": 0, "tpr": 1, "tnr": 1, "boundary_iou": 1}
    )


def test_surface_distances_are_in_mm_along_the_right_axis():
    # Surfaces are the voxels a 6-connected erosion removes: the 64-voxel cube has 56 of them.
    # Shift by one voxel along axis 0 with spacing (3, 1, 1). For each of the 56 prediction surface
    # voxels, the nearest reference surface voxel is:
    #   * 16 on the prediction's top face (k=6): the reference's top face at k=5 -> 3 mm;
    #   * 4 in the middle of its bottom face (k=3, j,i in 3..4): these are *inside* the reference,
    #     whose nearest surface voxel is its side wall one voxel away in j or i -> 1 mm (not 3 mm:
    #     that is where MONAI's surface-voxel definition departs from "the cube moved 3 mm");
    #   * the other 36 lie on the reference surface -> 0 mm.
    # By symmetry the reference-to-prediction distances are the same multiset.
    # HD95: the 95th percentile of 36 zeros, 4 ones and 16 threes is 3 (the top 16 of 56 values
    # are 3 and 0.95 * 55 = 52.25 falls among them) -> 3 mm.
    # ASSD: both directions pooled: 2 * (16*3 + 4*1) / 112 = 104/112 = 13/14 mm.
    m = binary_metrics(SHIFTED_K, REF_CUBE, (3.0, 1.0, 1.0))
    assert m["hd95"] == pytest.approx(3.0)
    assert m["assd"] == pytest.approx(13 / 14, abs=1e-5)

    # The same shift along axis 2 (spacing 1 mm there): every 3 above becomes 1.
    # HD95 = 1 mm; ASSD = 2 * (16*1 + 4*1) / 112 = 40/112 = 5/14 mm.
    m = binary_metrics(SHIFTED_I, REF_CUBE, (3.0, 1.0, 1.0))
    assert m["hd95"] == pytest.approx(1.0)
    assert m["assd"] == pytest.approx(5 / 14, abs=1e-5)


def test_tpr_tnr_and_signed_ravd_of_over_and_under_segmentation():
    # Reference: 64 voxels of 1000, so 936 negatives.
    # Over-segmentation: the cube stretched to 4x4x6 = 96 voxels, containing the reference:
    # TP = 64, FN = 0, FP = 32, TN = 936 - 32 = 904.
    # TPR = 64/64 = 1; TNR = 904/936; RAVD = (96 - 64)/64 = +0.5.
    over = box((10, 10, 10), (2, 6), (2, 6), (2, 8))
    m = binary_metrics(over, REF_CUBE, ISOTROPIC)
    assert m["tpr"] == pytest.approx(1.0)
    assert m["tnr"] == pytest.approx(904 / 936)
    assert m["ravd"] == pytest.approx(0.5)

    # Under-segmentation: half the cube, 4x4x2 = 32 voxels: TP = 32, FN = 32, FP = 0.
    # TPR = 32/64 = 0.5; TNR = 936/936 = 1; RAVD = (32 - 64)/64 = -0.5 (negative: too small).
    under = box((10, 10, 10), (2, 6), (2, 6), (2, 4))
    m = binary_metrics(under, REF_CUBE, ISOTROPIC)
    assert m["tpr"] == pytest.approx(0.5)
    assert m["tnr"] == pytest.approx(1.0)
    assert m["ravd"] == pytest.approx(-0.5)


def test_boundary_region_is_a_band_of_the_given_width_in_mm():
    # A 6x6x6 cube: a voxel at index 0..5 along an axis is 1,2,3,3,2,1 steps from the outside.
    cube = box((8, 8, 8), (1, 7), (1, 7), (1, 7))
    # Isotropic, 2 mm: only voxels 3 steps deep on every axis are outside the band: 2x2x2 = 8.
    assert boundary_region(cube, ISOTROPIC, 2.0).sum() == 216 - 8
    # Spacing (2, 1, 1): along axis 0 one step is already 2 mm, so only the two end slices are in the
    # band there; the interior is 4 (k) x 2 (j) x 2 (i) = 16 voxels.
    assert boundary_region(cube, (2.0, 1.0, 1.0), 2.0).sum() == 216 - 16
    # 1 mm: the one-voxel shell, 216 - 4^3 = 152; narrower still keeps the shell.
    assert boundary_region(cube, ISOTROPIC, 1.0).sum() == 152
    assert boundary_region(cube, ISOTROPIC, 0.1).sum() == 152
    # A mask touching the array edge has its contour there too.
    assert boundary_region(np.ones((5, 5, 5), bool), ISOTROPIC, 1.0).sum() == 125 - 27


def test_boundary_iou_of_identical_and_shifted_cubes():
    ref = box((12, 12, 12), (2, 8), (2, 8), (2, 8))
    assert boundary_iou(ref, ref, ISOTROPIC, 2.0) == 1.0
    # 6x6x6 cube shifted by one voxel along axis 0, d = 1 mm: each band is the 152-voxel shell.
    # Per slice k of the overlap 3..7 the shells share: k=3 reference rim (20) within the prediction
    # face, k=4,5,6 rim with rim (20 each), k=7 reference face with prediction rim (20): 100 voxels.
    # Boundary IoU = 100 / (152 + 152 - 100) = 100/204.
    shifted = box((12, 12, 12), (3, 9), (2, 8), (2, 8))
    assert boundary_iou(shifted, ref, ISOTROPIC, 1.0) == pytest.approx(100 / 204)
    assert binary_metrics(shifted, ref, ISOTROPIC, boundary_mm=1.0)["boundary_iou"] == pytest.approx(100 / 204)


def test_both_empty_is_a_perfect_score():
    empty = np.zeros((6, 6, 6), bool)
    with no_warnings():
        m = binary_metrics(empty, empty, ISOTROPIC)
    assert m == {"dice": 1, "iou": 1, "hd95": 0, "assd": 0, "ravd": 0, "tpr": 1, "tnr": 1, "boundary_iou": 1}


def test_empty_prediction_of_a_present_structure():
    # Reference 64 voxels, prediction none: nothing found (TPR 0), RAVD (0 - 64)/64 = -1, no
    # prediction surface to measure from (distances nan), all 936 negatives kept (TNR 1).
    with no_warnings():
        m = binary_metrics(np.zeros_like(REF_CUBE), REF_CUBE, ISOTROPIC)
    assert m["dice"] == m["iou"] == m["boundary_iou"] == 0
    assert math.isnan(m["hd95"]) and math.isnan(m["assd"])
    assert m["tpr"] == 0 and m["tnr"] == 1 and m["ravd"] == -1


def test_prediction_of_an_absent_structure():
    # Reference empty, prediction 64 voxels: overlap 0, distances nan, RAVD 64/0 -> nan,
    # TPR 1 (no positives to miss), TNR = (1000 - 64)/1000.
    with no_warnings():
        m = binary_metrics(REF_CUBE, np.zeros_like(REF_CUBE), ISOTROPIC)
    assert m["dice"] == m["iou"] == m["boundary_iou"] == 0
    assert math.isnan(m["hd95"]) and math.isnan(m["assd"]) and math.isnan(m["ravd"])
    assert m["tpr"] == 1
    assert m["tnr"] == pytest.approx(936 / 1000)


def test_bad_inputs_are_refused():
    with pytest.raises(SparseSegError):
        binary_metrics(REF_CUBE, REF_CUBE[:-1], ISOTROPIC)
    with pytest.raises(SparseSegError):
        binary_metrics(REF_CUBE, REF_CUBE, (1.0, 1.0))
    with pytest.raises(SparseSegError):
        case_metrics(REF_CUBE.astype(int), REF_CUBE.astype(int), ISOTROPIC, {1: "mean"})


def two_class_maps():
    # Reference: class 1 on k=2..3, class 2 on k=4..5, each 2x4x4 = 32 voxels.
    # Prediction: class 1 on k=2..4 (48), class 2 on k=5..6 (32).
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:4, 2:6, 2:6] = 1
    ref[4:6, 2:6, 2:6] = 2
    pred = np.zeros_like(ref)
    pred[2:5, 2:6, 2:6] = 1
    pred[5:7, 2:6, 2:6] = 2
    return pred, ref


def test_case_metrics_scores_each_class_the_merged_foreground_and_their_mean():
    pred, ref = two_class_maps()
    m = case_metrics(pred, ref, ISOTROPIC, {1: "Anterior", 2: "Posterior"})
    assert list(m) == ["Anterior", "Posterior", "merged", "mean"]
    # Anterior: overlap k=2..3 = 32 -> Dice 2*32/(48+32) = 0.8.
    assert m["Anterior"]["dice"] == pytest.approx(0.8)
    # Posterior: overlap k=5 = 16 -> Dice 2*16/(32+32) = 0.5.
    assert m["Posterior"]["dice"] == pytest.approx(0.5)
    # Merged: prediction foreground k=2..6 (80) holds the reference foreground k=2..5 (64):
    # Dice 2*64/(80+64) = 8/9, better than either class: the class boundary does not count.
    assert m["merged"]["dice"] == pytest.approx(8 / 9)
    assert m["merged"]["ravd"] == pytest.approx(16 / 64)
    # Mean is over the classes only: (0.8 + 0.5)/2.
    assert m["mean"]["dice"] == pytest.approx(0.65)
    assert set(m["mean"]) == set(METRIC_NAMES)


def test_case_metrics_mean_ignores_nan_and_single_class_has_no_merged():
    pred, ref = two_class_maps()
    pred[pred == 2] = 0  # Posterior predicted nowhere: its HD95 is nan
    m = case_metrics(pred, ref, ISOTROPIC, {1: "Anterior", 2: "Posterior"})
    assert math.isnan(m["Posterior"]["hd95"])
    assert m["mean"]["hd95"] == m["Anterior"]["hd95"]
    assert m["mean"]["dice"] == pytest.approx((0.8 + 0) / 2)

    single = case_metrics(pred > 0, ref > 0, ISOTROPIC, {1: "Hippocampus"})
    assert list(single) == ["Hippocampus", "mean"]
    assert single["mean"] == single["Hippocampus"]
    assert list(case_metrics(pred, ref, ISOTROPIC, {1: "A", 2: "P"}, merged=False)) == ["A", "P", "mean"]


def test_summarize_reports_mean_sd_median_and_counts_ignoring_nan():
    cases = [
        {"Anterior": {"dice": 0.6, "hd95": 2.0}},
        {"Anterior": {"dice": 0.8, "hd95": math.nan}},
        {"Anterior": {"dice": 1.0, "hd95": 4.0}},
    ]
    s = summarize(cases)["Anterior"]
    # Dice 0.6, 0.8, 1.0: mean 0.8, sample sd sqrt((0.04 + 0 + 0.04)/2) = 0.2, median 0.8.
    assert s["dice"] == pytest.approx({"mean": 0.8, "sd": 0.2, "median": 0.8, "n": 3, "n_nan": 0})
    # HD95 2, nan, 4: nan left out -> mean 3, sd sqrt((1 + 1)/1) = sqrt(2), median 3.
    assert s["hd95"] == pytest.approx({"mean": 3.0, "sd": math.sqrt(2), "median": 3.0, "n": 2, "n_nan": 1})
    # One value: sd 0.
    assert summarize(cases[:1])["Anterior"]["dice"]["sd"] == 0.0


def test_format_table_has_units_decimals_na_and_a_mean_row():
    per_case = {
        "case_a": {"mean": {"dice": 0.75, "hd95": 3.0}},
        "case_b": {"mean": {"dice": 0.85, "hd95": math.nan}},
    }
    table = format_table(per_case, group="mean", metrics=("dice", "hd95"))
    lines = table.splitlines()
    assert lines[0] == "| Case | Dice | HD95 (mm) |"
    assert lines[2] == "| case_a | 0.750 | 3.00 |"
    assert lines[3] == "| case_b | 0.850 | n/a |"
    # Dice 0.75, 0.85: mean 0.8, sd 0.0707; HD95 has one finite value: sd 0.
    assert lines[4] == "| mean ± sd | 0.800 ± 0.071 | 3.00 ± 0.00 |"
    assert len(lines) == 5


def test_real_hippocampus_label_against_itself_and_shifted():
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(SAMPLE_LABEL))
    label = sitk.GetArrayFromImage(image)
    spacing = tuple(reversed(image.GetSpacing()))  # (i, j, k) -> (k, j, i)
    names = {1: "Anterior", 2: "Posterior"}

    same = case_metrics(label, label, spacing, names)
    for group in ("Anterior", "Posterior", "merged", "mean"):
        assert same[group]["dice"] == 1.0
        assert same[group]["hd95"] == 0.0

    shifted = np.zeros_like(label)
    shifted[1:] = label[:-1]  # one voxel along axis 0
    moved = case_metrics(shifted, label, spacing, names)
    for group in ("Anterior", "Posterior", "merged"):
        assert 0.5 < moved[group]["dice"] < 1.0
        assert moved[group]["hd95"] >= 1.0


def test_count_based_overlap_scores_match_the_monai_scores_and_leave_unknown_voxels_out():
    from SparseSegLib.metrics import foreground_dices, mask_dice, mask_iou

    pred = np.zeros((4, 5, 6), np.uint8)
    ref = np.zeros_like(pred)
    pred[1:3, 1:4, 1:4] = 1  # 18 voxels
    ref[1:3, 2:5, 1:4] = 1   # 18 voxels, 12 shared
    pred[0, 0, :2] = 2       # class 2 only in the prediction
    assert mask_dice(pred == 1, ref == 1) == 2 * 12 / 36 and mask_iou(pred == 1, ref == 1) == 12 / 24
    full = binary_metrics(pred == 1, ref == 1, ISOTROPIC)
    assert mask_dice(pred == 1, ref == 1) == pytest.approx(full["dice"]) and mask_iou(pred == 1, ref == 1) == pytest.approx(full["iou"])
    empty = np.zeros_like(pred, bool)
    assert mask_dice(empty, empty) == 1.0 and mask_dice(empty, empty, empty=None) is None and mask_iou(empty, empty) == 1.0
    assert foreground_dices(pred, ref, 4) == [2 * 12 / 36, 0.0]  # class 3 is in neither: not scored
    known = np.zeros_like(pred, bool)
    known[1] = True  # one slice annotated: 9 predicted, 9 true, 6 shared there; class 2 lies outside it
    assert foreground_dices(pred, ref, 3, known=known) == [2 * 6 / 18]
