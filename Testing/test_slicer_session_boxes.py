"""The Slicer session's *Annotated region: boxes* on a real MRML scene (``slicer-core`` wheel) with a real worker:
an ROI markup placed over part of the hippocampus, the object painted inside it, Start with the module's defaults.
The job gets the ROI as a box, the result keeps the paint inside it and carries the object out of it without
flooding (only the network's iterations are cut to keep the test short)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from SparseSegLib.io import read_label  # noqa: E402
from SparseSegLib.jobs.regions import boxes_mask  # noqa: E402
from SparseSegLib.session.headless import add_volume  # noqa: E402
from SparseSegLib.session.session import Session, SessionSettings  # noqa: E402

from slicer_session_support import CLASSES, correct_slice, finished, run_until  # noqa: E402

pytestmark = pytest.mark.mrml


def roi_over(scene, ijk_to_ras: np.ndarray, low: tuple[int, int, int], high: tuple[int, int, int]):
    """An ROI markup covering voxels ``low``..``high`` (inclusive, ``(k, j, i)``): its faces half a voxel outside them."""
    corners = np.array([[i, j, k, 1.0] for k in (low[0] - 0.5, high[0] + 0.5) for j in (low[1] - 0.5, high[1] + 0.5)
                        for i in (low[2] - 0.5, high[2] + 0.5)])
    ras = (ijk_to_ras @ corners.T).T[:, :3]
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenter(*((ras.min(0) + ras.max(0)) / 2).tolist())
    roi.SetSize(*(ras.max(0) - ras.min(0)).tolist())
    return roi


def boxed_session(scene, sample_case, tmp_path):
    """A session as the user sets it up: an ROI markup over the middle of the hippocampus (13 voxels a side), the
    object painted inside it, *Annotated region: boxes*, the module's Start defaults (iterations cut for a test).
    ``(session, volume, box voxels)``."""
    from SparseSegLib.session.headless import add_segmentation

    label = sample_case.label
    present = np.argwhere(label > 0)
    centre = ((present.min(0) + present.max(0)) // 2).astype(int)
    low = tuple(int(c) - 6 for c in centre)
    high = tuple(int(c) + 6 for c in centre)
    box = tuple(slice(a, b + 1) for a, b in zip(low, high))
    inside = np.zeros(label.shape, bool)
    inside[box] = True
    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    annotation = add_segmentation(scene, volume, [(name, color, inside & (label == value))
                                                  for value, (name, color) in enumerate(CLASSES, start=1)])
    roi = roi_over(scene, sample_case.geometry.ijk_to_ras(), low, high)
    settings = SessionSettings(region="boxes", threads=1, device="cpu", method_options={"iterations": 20, "batch_size": 4})
    return Session(volume, annotation, settings, tmp_path, roi_nodes=[roi]), volume, inside


def test_start_from_an_roi_box_registers_its_faces_and_keeps_the_paint(scene, sample_case, tmp_path):
    label = sample_case.label
    session, _, inside = boxed_session(scene, sample_case, tmp_path)
    job = session.start()
    region = json.loads((job.directory / "job.json").read_text())["region"]
    assert region["kind"] == "boxes" and len(region["boxes"]) == 1 and "ras" in region["boxes"][0]
    run_until(session, finished(session))
    assert session.status == "finished", session.log
    assert session.imported_rounds == [1, 2]  # the faces' registration, then the network round
    assert np.array_equal(boxes_mask(region["boxes"], sample_case.geometry), inside)  # the ROI's voxels, exactly
    result = session.result_label()
    assert np.array_equal(result[inside], label[inside])  # the paint comes back as painted
    truth = label > 0
    outside = truth & ~inside
    assert ((result > 0) & outside).sum() > 0.3 * outside.sum()  # the object is carried out of the box
    assert (result > 0).sum() < 1.5 * truth.sum()  # and does not flood


def test_continue_after_boxes_keeps_the_box_and_adds_the_corrected_slice(scene, sample_case, tmp_path):
    """The user boxes, presses Start, corrects one axial slice beyond the box and presses Continue: the next stage's
    ground truth is the box and that slice (nothing else), both come back as painted, and the object still
    leaves the box (its faces and the slice are registered outwards together, docs/methods/propagate.md)."""
    label = sample_case.label
    session, volume, inside = boxed_session(scene, sample_case, tmp_path)
    session.start()
    run_until(session, finished(session))
    assert session.status == "finished", session.log
    ks = np.flatnonzero((label > 0).any(axis=(1, 2)))
    outside_box = [k for k in ks if not inside[k].any()]
    k = outside_box[len(outside_box) // 2]
    correct_slice(session, volume, label, k)
    second = session.continue_session()
    assert session.corrections[-1]["slices"] == [k]
    annotated = read_label(second.directory / "inputs/annotated.nrrd").astype(bool)
    expected = inside.copy()
    expected[k] = True
    assert np.array_equal(annotated, expected)
    run_until(session, finished(session))
    assert session.status == "finished", session.log
    assert session.imported_rounds == [1, 2, 3, 4]
    result = session.result_label()
    assert np.array_equal(result[expected], label[expected])
    truth = label > 0
    elsewhere = truth & ~expected
    assert ((result > 0) & elsewhere).sum() > 0.3 * elsewhere.sum()
    assert (result > 0).sum() < 1.5 * truth.sum()
