"""A hole the user painted as background stays a hole: ``propagate``'s anchoring fills only the holes the paint says
nothing about, and a model saved from such a job does not fill holes either (small arrays: the rule itself)."""

from __future__ import annotations

import numpy as np

from SparseSegLib.engine.postprocess import painted_holes, without_fill
from SparseSegLib.methods.propagate.fusion import anchor_at_paint


def shell_with_cavity() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, painted_foreground, painted_background)``: a closed 7x7x7 shell (class 1) around a 3x3x3 cavity,
    a second small enclosed hole elsewhere in a solid part, and slice 4 painted (the cavity's middle on it)."""
    labels = np.zeros((9, 14, 9), np.uint8)
    labels[1:8, 1:8, 1:8] = 1
    labels[3:6, 3:6, 3:6] = 0  # the cavity: background the paint shows on slice 4
    labels[1:8, 8:13, 1:8] = 1
    labels[2, 10, 4] = 0  # a one-voxel hole the paint never sees (slice 2)
    painted = np.zeros(labels.shape, bool)
    painted[4] = True
    return labels, painted & (labels > 0), painted & (labels == 0)


def test_a_painted_cavity_stays_background_and_an_unpainted_hole_is_filled():
    labels, foreground, background = shell_with_cavity()
    anchored = anchor_at_paint(labels, foreground, background)
    assert not anchored[3:6, 3:6, 3:6].any()  # the whole 3D cavity, not only its painted slice
    assert anchored[2, 10, 4] == 1
    filled_all = anchor_at_paint(labels, foreground)  # without the painted background: every hole filled
    assert filled_all[3:6, 3:6, 3:6].all() and filled_all[2, 10, 4] == 1


def test_a_result_with_a_painted_cavity_says_so_for_the_saved_model():
    labels, foreground, background = shell_with_cavity()
    assert painted_holes(labels, background)
    solid = labels.copy()
    solid[3:6, 3:6, 3:6] = 1
    assert not painted_holes(solid, np.zeros(labels.shape, bool) | (background & (solid == 0)))


def test_a_cavity_open_at_an_end_is_no_hole_though_the_painted_slice_encloses_it():
    labels, foreground, background = shell_with_cavity()
    tube = labels.copy()
    tube[3:, 3:6, 3:6] = 0  # the cavity runs out of the shell's far end: enclosed on slice 4 only in 2D
    assert not painted_holes(tube, background & (tube == 0))
    assert anchor_at_paint(tube, foreground, background)[3:, 3:6, 3:6].sum() == 0  # nothing to fill either


def test_a_cohort_whose_labelled_slices_show_a_cavity_gets_a_model_that_fills_no_hole():
    """``collaborative`` (a cohort model, or its job's Save model): the same rule over every training volume."""
    from SparseSegLib.engine.sampling import UNKNOWN, TrainingVolume
    from SparseSegLib.methods.base import MethodOptions
    from SparseSegLib.methods.collaborative import _set_prediction_rules, labelled_holes
    from SparseSegLib.methods.collaborative.axes import collaborative_segmenter
    from SparseSegLib.methods.collaborative.branches import Scan
    from SparseSegLib.methods.collaborative.settings import IMPROVED, CollaborativeSettings

    labels, _, _ = shell_with_cavity()
    sparse = np.full(labels.shape, UNKNOWN, np.int64)
    sparse[4] = labels[4]  # the labelled slice: the cavity's middle, labelled background
    image = np.zeros(labels.shape, np.float32)
    hollow = Scan("hollow", image, sparse, [4], (1.0, 1.0, 1.0))
    solid_labels = labels.copy()
    solid_labels[3:6, 3:6, 3:6] = 1
    solid_sparse = np.full(labels.shape, UNKNOWN, np.int64)
    solid_sparse[4] = solid_labels[4]
    solid = Scan("solid", image, solid_sparse, [4], (1.0, 1.0, 1.0))
    targets = {"hollow": TrainingVolume(image, labels.astype(np.int64)),
               "solid": TrainingVolume(image, solid_labels.astype(np.int64))}
    assert not labelled_holes([solid], [targets["solid"]])
    assert labelled_holes([hollow], [targets["hollow"]])
    assert labelled_holes([solid, hollow, hollow], [targets[name] for name in ("solid", "hollow", "hollow")])
    assert not labelled_holes([solid, hollow], [targets["solid"], targets["hollow"]])  # one volume in two: no majority
    settings = CollaborativeSettings.parse({}, IMPROVED, "collaborative")
    assert settings.postprocess == "lcc-fill"

    for scans, expected in (([solid, hollow], "lcc-fill"), ([hollow, solid, hollow], "lcc")):
        model = collaborative_segmenter([s.as_case(2) for s in scans], MethodOptions(), "collaborative", settings)
        record = {}
        _set_prediction_rules(model, replace_threshold(settings), scans, [targets[s.case_id] for s in scans], None,
                              record)
        assert model.postprocess == expected and record.get("holes", False) == (expected == "lcc")
    assert without_fill("fill") == "none" and without_fill("lcc") == "lcc"


def replace_threshold(settings):
    """The settings with a fixed object threshold, so no network is asked to calibrate one."""
    from dataclasses import replace

    return replace(settings, prediction_threshold="0.5")
