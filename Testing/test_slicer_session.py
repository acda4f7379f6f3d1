"""The Slicer session logic on a real MRML scene (``slicer-core`` wheel) with real worker processes.

What a user does in the module, minus the Qt widget: volume and annotation nodes in a scene, one painted
slice, Start, rounds streamed into the result segmentation, Stop, a corrected slice, Continue, Save model,
Apply model. Training is tiny (sparse-only, 2D, a few iterations, one thread) so each worker run takes
seconds; the real ``SparseSegTest`` in SparseSeg/SparseSeg.py runs the same loop inside Slicer.

This file: the rounds in the scene (names, colours, tags, undo, the volume's grid, an oblique geometry) and the
suggested slice. Stop, Continue and Accept are in test_slicer_session_stages.py; Save model, Apply model, the
dependency probe and the module controller in test_slicer_session_tasks.py; the shared helpers in
slicer_session_support.py, the ``scene`` fixture in conftest.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from SparseSegLib.io import read_image, read_label  # noqa: E402
from SparseSegLib.session import mrml  # noqa: E402
from SparseSegLib.session.headless import add_segmentation, add_volume  # noqa: E402
from SparseSegLib.session.session import ROUND_TAG, Session  # noqa: E402

from slicer_session_support import (  # noqa: E402
    CLASSES,
    add_slice_views,
    both_classes_slice,
    finished,
    paint,
    run_until,
    temporary_nodes,
    tiny,
)

pytestmark = pytest.mark.mrml


def test_end_to_end_on_the_sample_case(scene, sample_case, tmp_path):
    """Two rounds arrive in the result node with the annotation's names and colours, round tags, the
    worker's voxels on the volume's grid, one undo state each; the annotation stays bit for bit."""
    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    k = both_classes_slice(sample_case.label)
    annotation = paint(scene, volume, sample_case.label, [k])
    before = mrml.segment_fingerprint(annotation, (ROUND_TAG,))
    scene.SetUndoOn()
    session = Session(volume, annotation, tiny(), tmp_path)
    job = session.start()
    run_until(session, finished(session))

    assert session.status == "finished", session.log
    assert session.imported_rounds == [1, 2]
    assert scene.GetNumberOfUndoLevels() == 2  # one undo state per imported round
    result = session.result_node
    segmentation = result.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for value, (name, color) in enumerate(CLASSES, start=1):
        segment = segmentation.GetSegment(f"SparseSeg_{value}")
        assert segment.GetName() == name
        assert np.allclose(segment.GetColor(), color)
        assert mrml.segment_tag(segment, ROUND_TAG) == "2"
    assert result.GetAttribute(ROUND_TAG) == "2"
    # the voxels are the worker's round 2, on the volume's grid
    worker_label = read_label(job.directory / "rounds/002/label.nrrd")
    assert np.array_equal(session.result_label(), worker_label)
    layer = segmentation.GetSegment("SparseSeg_1").GetRepresentation(mrml.binary_labelmap_name())
    assert np.allclose(_image_to_world(layer), mrml.ijk_to_ras(volume))
    # the job holds the annotation exactly, classes named as in Slicer
    spec = json.loads((job.directory / "job.json").read_text())
    assert spec["classes"] == {"1": {"name": "Anterior", "color": [1.0, 0.5, 0.0]},
                               "2": {"name": "Posterior", "color": [0.2, 0.4, 1.0]}}
    exported = read_label(job.directory / "inputs/annotation.nrrd")
    expected = np.zeros_like(sample_case.label)
    expected[k] = sample_case.label[k]
    assert np.array_equal(exported, expected)
    # never modified: the annotation node, bit for bit; no temporary node left behind
    assert mrml.segment_fingerprint(annotation, (ROUND_TAG,)) == before
    assert temporary_nodes(scene) == []
    # undo steps back to round 1 exactly
    scene.Undo()
    assert np.array_equal(session.result_label(), read_label(job.directory / "rounds/001/label.nrrd"))


def _image_to_world(image) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return mrml.matrix_to_array(matrix)


def test_geometry_round_trip_with_rotation_and_anisotropic_spacing(scene, tmp_path):
    """A volume with an oblique IJK-to-RAS (30 degree rotation, spacing 0.7 x 1.3 x 2.5, off-zero origin):
    the job's files are on the same physical grid (LPS in the file, RAS in Slicer) and the round comes
    back onto the volume's voxels."""
    angle = np.deg2rad(30.0)
    c, s = np.cos(angle), np.sin(angle)
    ras = np.eye(4)
    ras[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.7, 1.3, 2.5])
    ras[:3, 3] = (-12.5, 30.25, 4.0)
    shape = (12, 32, 32)
    k, j, i = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    ball = ((i - 16) ** 2 + (j - 15) ** 2 + ((k - 6) * 2.5) ** 2) < 81
    rng = np.random.default_rng(0)
    volume = add_volume(scene, (ball * 100 + rng.normal(0, 5, shape)).astype(np.float32), ras, "oblique")
    painted = np.zeros(shape, bool)
    painted[6] = ball[6]
    annotation = add_segmentation(scene, volume, [("Ball", (0.9, 0.1, 0.1), painted)])

    geometry = mrml.volume_geometry(volume)
    assert np.allclose(geometry.ijk_to_ras(), ras)
    assert np.allclose(geometry.ijk_to_lps(), np.diag([-1, -1, 1, 1]) @ ras)

    session = Session(volume, annotation, tiny(rounds=1, iterations_per_round=4), tmp_path)
    job = session.start()
    image, file_geometry = read_image(job.directory / "inputs/image.nrrd")
    assert file_geometry.matches(geometry, tolerance=1e-6)
    assert np.allclose(file_geometry.ijk_to_ras(), ras, atol=1e-6)
    assert np.array_equal(image, mrml.volume_array(volume))
    assert np.array_equal(read_label(job.directory / "inputs/annotation.nrrd"), painted.astype(np.uint8))
    run_until(session, finished(session))
    assert session.imported_rounds == [1], session.log
    worker_label = read_label(job.directory / "rounds/001/label.nrrd")
    assert np.array_equal(session.result_label(), worker_label)
    layer = session.result_node.GetSegmentation().GetSegment("SparseSeg_1").GetRepresentation(mrml.binary_labelmap_name())
    assert np.allclose(_image_to_world(layer), ras)
    # one voxel, by physical position: the result's voxel (i, j, k) is where the worker put it
    index = np.argwhere(worker_label > 0)[0]
    point = ras @ np.array([index[2], index[1], index[0], 1.0])
    voxel = np.rint(np.linalg.inv(_image_to_world(layer)) @ point)[:3].astype(int)
    extent = layer.GetExtent()
    from vtk.util import numpy_support

    voxels = numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(
        extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    assert voxels[voxel[2] - extent[4], voxel[1] - extent[2], voxel[0] - extent[0]] > 0


def test_session_exposes_the_suggested_slice_and_jumps_the_views_there(scene, sample_case, tmp_path):
    """Annotate next: after a round the session names the slice the worker is least sure of (an unpainted k
    slice, i.e. axial here), placed in world RAS through the volume's IJK-to-RAS and its parent transform;
    the jump puts the axial view on it; once that slice is ground truth it is no longer suggested."""
    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    k = both_classes_slice(sample_case.label)
    annotation = paint(scene, volume, sample_case.label, [k])
    session = Session(volume, annotation, tiny(rounds=1, iterations_per_round=8), tmp_path)
    assert session.suggested_slice() is None  # nothing before the first round
    job = session.start()
    run_until(session, finished(session))
    assert session.status == "finished", session.log

    record = job.round_record(1)["suggested_slice"]
    suggestion = session.suggested_slice()
    assert suggestion is not None and (suggestion.axis, suggestion.index) == (record["axis"], record["index"])
    assert suggestion.axis == 0 and suggestion.index != k and 0 <= suggestion.index < sample_case.image.shape[0]
    assert suggestion.orientation == "axial" and suggestion.round == 1
    i, j, kk = record["ijk"]
    ras = mrml.ijk_to_ras(volume) @ np.array([i, j, kk, 1.0])
    assert np.allclose(suggestion.ras, ras[:3])
    assert np.allclose(np.abs(suggestion.normal), (0, 0, 1))
    assert f"slice {suggestion.index}" in suggestion.describe() and "axial" in suggestion.describe()

    views = add_slice_views(scene)
    shown, names = session.jump_to_suggested_slice()
    assert shown == suggestion and names == ["Red"]
    red = mrml.matrix_to_array(views["Red"].GetSliceToRAS())
    assert np.allclose(red[:3, 3], suggestion.ras)  # centred on the point, in the suggested slice's plane
    on_slice = np.linalg.inv(mrml.ijk_to_ras(volume)) @ np.append(red[:3, 3], 1.0)
    assert np.isclose(on_slice[2], suggestion.index)
    assert "annotate next: axial slice" in session.log[-1] and "Red" in session.log[-1]

    # under a transform the point moves with the volume (views jump in world coordinates)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -7.0, 11.0)
    transform.SetMatrixTransformToParent(mrml.array_to_matrix(shift))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    assert np.allclose(session.suggested_slice().ras, np.asarray(suggestion.ras) + (5.0, -7.0, 11.0))
    volume.SetAndObserveTransformNodeID(None)

    # painted and made ground truth (what Continue does to the annotated mask): no longer suggested
    session.annotated_mask[suggestion.index] = True
    assert session.suggested_slice() is None
    with pytest.raises(Exception, match="no slice is suggested"):
        session.jump_to_suggested_slice()
    assert temporary_nodes(scene) == []
