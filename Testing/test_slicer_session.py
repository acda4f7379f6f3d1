"""The Slicer session logic on a real MRML scene (``slicer-core`` wheel) with real worker processes.

What a user does in the module, minus the Qt widget: volume and annotation nodes in a scene, one painted
slice, Start, rounds streamed into the result segmentation, Stop, a corrected slice, Continue, Save model,
Apply model. Training is tiny (sparse-only, 2D, a few iterations, one thread) so each worker run takes
seconds; the real ``SparseSegTest`` in SparseSeg/SparseSeg.py runs the same loop inside Slicer.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from SparseSegLib.io import read_image, read_label  # noqa: E402
from SparseSegLib.jobs import layout  # noqa: E402
from SparseSegLib.session import mrml  # noqa: E402
from SparseSegLib.session.headless import add_segmentation, add_volume, make_headless_slicer  # noqa: E402
from SparseSegLib.session.session import ROUND_TAG, Session, SessionSettings  # noqa: E402

pytestmark = pytest.mark.mrml

CLASSES = (("Anterior", (1.0, 0.5, 0.0)), ("Posterior", (0.2, 0.4, 1.0)))


def tiny(**changes) -> SessionSettings:
    settings = dict(method="sparse-only", rounds=2, iterations_per_round=8, batch_size=2, threads=1, device="cpu")
    settings.update(changes)
    return SessionSettings(**settings)


@pytest.fixture
def scene():
    scene, _, _ = make_headless_slicer()
    yield scene
    scene.Clear(1)


def both_classes_slice(label: np.ndarray) -> int:
    return next(k for k in range(label.shape[0]) if (label[k] == 1).any() and (label[k] == 2).any())


def paint(scene, volume, label: np.ndarray, slices):
    """An annotation node: the reference label on ``slices`` (axis 0), one segment per class."""
    segments = []
    for value, (name, color) in enumerate(CLASSES, start=1):
        mask = np.zeros(label.shape, bool)
        mask[list(slices)] = label[list(slices)] == value
        segments.append((name, color, mask))
    return add_segmentation(scene, volume, segments, "annotation")


def run_until(session: Session, condition, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"session status {session.status}; log tail {session.log[-5:]}")
        session.poll()
        time.sleep(0.05)


def finished(session: Session):
    return lambda: session.status in ("finished", "cancelled", "error") and not session.pending_rounds and not session.job.is_running()


def correct_slice(session: Session, volume, reference: np.ndarray, index: int) -> None:
    """What the user does in the Segment Editor: paint the reference over slice ``index`` of the result node."""
    import slicer.util

    current = session.result_label()
    for value in (1, 2):
        mask = current == value
        mask[index] = reference[index] == value
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), session.result_node,
                                                         f"SparseSeg_{value}", volume)


def temporary_nodes(scene) -> list[str]:
    names = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.IsA("vtkMRMLLabelMapVolumeNode") or (node.GetName() or "").startswith("__"):
            names.append(node.GetName())
    return names


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


def test_cancel_mid_round_then_continue_with_a_corrected_slice(scene, sample_case, tmp_path):
    """Stop during round 2: the scene holds round 1 exactly. A corrected slice then becomes ground truth
    of the next stage (the job the session writes), which resumes from the checkpoint."""
    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    k = both_classes_slice(sample_case.label)
    annotation = paint(scene, volume, sample_case.label, [k])
    before = mrml.segment_fingerprint(annotation, (ROUND_TAG,))
    session = Session(volume, annotation, tiny(rounds=4, iterations_per_round=400), tmp_path)
    first = session.start()
    run_until(session, lambda: session.imported_rounds == [1])
    session.cancel(grace_s=5.0)
    run_until(session, finished(session))
    assert session.status == "cancelled", session.log
    done = layout.last_complete_round(first.directory)
    assert session.imported_rounds == list(range(1, done + 1))
    assert np.array_equal(session.result_label(), read_label(first.directory / f"rounds/{done:03d}/label.nrrd"))
    for value in (1, 2):
        segment = session.result_node.GetSegmentation().GetSegment(f"SparseSeg_{value}")
        assert mrml.segment_tag(segment, ROUND_TAG) == str(done)
    assert temporary_nodes(scene) == []
    assert mrml.segment_fingerprint(annotation, (ROUND_TAG,)) == before

    # the user corrects slice c of the result (paints the reference there) in the Segment Editor
    c = next(s for s in range(sample_case.label.shape[0]) if s != k and (sample_case.label[s] > 0).sum() > 20)
    correct_slice(session, volume, sample_case.label, c)
    axis, slices, _ = session.find_corrections()
    assert (axis, slices) == (0, [c])

    session.settings.iterations_per_round = 8  # the user may change settings between stages; keeps this test short
    second = session.continue_session(rounds=1)
    spec = json.loads((second.directory / "job.json").read_text())
    assert spec["region"]["kind"] == "mask"
    annotated = read_label(second.directory / "inputs/annotated.nrrd")
    assert sorted(np.flatnonzero(annotated.any(axis=(1, 2)))) == sorted([k, c])
    assert annotated[[k, c]].all()
    new_annotation = read_label(second.directory / "inputs/annotation.nrrd")
    assert np.array_equal(new_annotation[c], sample_case.label[c])
    assert np.array_equal(new_annotation[k], sample_case.label[k])
    assert spec["parameters"]["rounds"] == done + 1
    run_until(session, finished(session))
    assert session.status == "finished", session.log
    assert session.imported_rounds[-1] == done + 1
    events = [json.loads(line) for line in (second.directory / "events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "started")["resume_from"] == done
    assert mrml.segment_fingerprint(annotation, (ROUND_TAG,)) == before


def test_save_model_and_apply_it_to_another_volume(scene, sample_dataset, sample_case, tmp_path):
    """Save model writes a model folder from the job's checkpoint; Apply model segments a second volume
    in the background and imports it with the class names and colours."""
    from SparseSegLib.session import tasks

    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    annotation = paint(scene, volume, sample_case.label, [both_classes_slice(sample_case.label)])
    session = Session(volume, annotation, tiny(rounds=1, iterations_per_round=6), tmp_path)
    job = session.start()
    run_until(session, finished(session))
    task = tasks.save_model(job.directory, tmp_path / "model")
    assert task.wait(timeout=150) == 0, task.output_tail()
    config = tasks.read_model_config(tmp_path / "model")
    assert config["classes"] == {"1": "Anterior", "2": "Posterior"}

    other = sample_dataset.load(sample_dataset.cases[1])
    target = add_volume(scene, other.image, other.geometry.ijk_to_ras(), "second")
    apply = tasks.ApplyModelTask(tmp_path / "model", target, tmp_path, device="cpu")
    deadline = time.monotonic() + 150
    while apply.poll() is None:
        assert time.monotonic() < deadline, apply.task.output_tail()
        time.sleep(0.1)
    node = apply.result
    names = [node.GetSegmentation().GetNthSegment(i).GetName() for i in range(node.GetSegmentation().GetNumberOfSegments())]
    assert names == ["Anterior", "Posterior"]
    predicted = read_label(apply.output_path)
    exported = mrml.export_segments(node, ["SparseSeg_1", "SparseSeg_2"], target)
    assert np.array_equal(exported, predicted)


def test_dependency_probe_reports_missing_packages(tmp_path):
    """The probe runs in the worker's Python and names what is missing (here torch and MONAI, hidden)."""
    from SparseSegLib.session import tasks

    for name in ("torch", "monai"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('{name} hidden for this test')\n")
    report = tasks.probe_environment(env={"PYTHONPATH": str(tmp_path)})
    assert report["missing"] == ["torch", "monai"]
    assert tasks.missing_requirements(report) == ["torch>=2.1", "monai>=1.3"]
    assert "missing: torch, monai" in tasks.describe_environment(report)


def add_slice_views(scene) -> dict:
    """The three slice views of Slicer's conventional layout (Red axial, Yellow sagittal, Green coronal)."""
    import slicer

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    views = {}
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        node = scene.CreateNodeByClass("vtkMRMLSliceNode")
        node.SetName(name)
        node.SetLayoutName(name)
        node.SetSingletonTag(name)
        views[name] = scene.AddNode(node)
        assert views[name].SetOrientation(orientation)
    return views


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


def test_start_defaults_run_until_the_method_is_done_and_continue_runs_a_new_stage(scene, sample_case, tmp_path):
    """The module's Start with its defaults (SparseSegLib.defaults: propagate, rounds left to the method): the
    progress bar follows the method's plan, the job stops by itself, and Continue with one corrected slice runs the
    method's next stage with that slice as ground truth (only the iterations are cut to keep the test short)."""
    from SparseSegLib.defaults import START_METHOD

    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    k = both_classes_slice(sample_case.label)
    annotation = paint(scene, volume, sample_case.label, [k])
    settings = SessionSettings(threads=1, device="cpu", method_options={"iterations": 20, "batch_size": 4})
    assert settings.method == START_METHOD and settings.rounds is None
    session = Session(volume, annotation, settings, tmp_path)
    job = session.start()
    assert json.loads((job.directory / "job.json").read_text())["parameters"]["rounds"] is None
    run_until(session, finished(session))
    assert session.status == "finished", session.log
    assert session.imported_rounds == [1, 2] and session.planned_rounds() == 2
    assert session.progress()[0] == 1.0
    c = next(s for s in range(sample_case.label.shape[0]) if abs(s - k) > 2 and (sample_case.label[s] > 0).sum() > 20)
    correct_slice(session, volume, sample_case.label, c)
    second = session.continue_session()
    assert json.loads((second.directory / "job.json").read_text())["parameters"]["rounds"] is None
    run_until(session, finished(session))
    assert session.status == "finished", session.log
    assert session.imported_rounds == [1, 2, 3, 4] and session.planned_rounds() == 4
    assert np.array_equal(session.result_label()[c], sample_case.label[c])


def test_poll_reads_the_last_events_after_the_worker_exits_and_accept_survives_a_late_cancelled(scene, sample_case, tmp_path):
    """(e) The worker may write its last round and ``finished`` and exit between two timer ticks: the session stays
    ``running`` (the timer keeps polling) until those events are read. (h) Accept stops the worker, whose late
    ``cancelled`` event must not turn "accepted" into "cancelled"."""
    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    annotation = paint(scene, volume, sample_case.label, [both_classes_slice(sample_case.label)])
    session = Session(volume, annotation, tiny(rounds=2, iterations_per_round=60), tmp_path / "race")
    job = session.start()
    run_until(session, lambda: session.imported_rounds)  # round 1 in the scene while round 2 trains
    job.process.wait(timeout=150)  # round 2 and `finished` are written, the worker exits: nobody has read them
    assert session.running, "the timer would stop here and the session stay 'running' for good"
    run_until(session, lambda: not session.running)
    assert session.status == "finished" and session.imported_rounds == [1, 2], session.log

    accepted = Session(volume, annotation, tiny(rounds=4, iterations_per_round=400), tmp_path / "accept")
    job = accepted.start()
    run_until(accepted, lambda: accepted.imported_rounds)
    accepted.accept()
    run_until(accepted, lambda: not accepted.running and job.reader.caught_up())
    assert job.terminal_event is not None and job.terminal_event["event"] == "cancelled"
    assert accepted.status == "accepted" and accepted.progress()[1].startswith("accepted")


def test_module_controller_probes_in_the_background_and_a_failed_apply_stops_nothing(scene, sample_case, tmp_path):
    """What the module's buttons do, polled like its timer: (c) the first Start probes the worker's Python in a
    background process (Start returns at once); (f) an Apply that fails is reported once, its task cleared, and
    the rounds keep streaming; (g) the message box text carries the error's hint; a second Start reuses the probe."""
    from SparseSegLib.errors import SparseSegError
    from SparseSegLib.session.controller import ModuleController, error_text

    assert error_text(SparseSegError("it broke", "Do this.")) == "it broke\n\nDo this."
    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    annotation = paint(scene, volume, sample_case.label, [both_classes_slice(sample_case.label)])
    controller, log, errors = ModuleController(), [], []

    def drive(condition, timeout=150.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, (errors, log[-5:])
            errors.extend(controller.poll().errors)
            time.sleep(0.05)

    settings = tiny(rounds=3, iterations_per_round=40)
    started = time.monotonic()
    assert controller.start(settings, lambda: Session(volume, annotation, settings, tmp_path), tmp_path, log.append) is None
    assert time.monotonic() - started < 5 and controller.checking and controller.busy()
    drive(lambda: controller.session is not None and controller.session.imported_rounds)
    assert "worker Python" in log[-1] and "torch" in log[-1] and not errors
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"classes": {"1": "Anterior"}}')
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    controller.apply_model(str(broken), volume, tmp_path, device="cpu")
    drive(lambda: not controller.busy())
    assert [what for what, _ in errors] == ["apply"], errors
    assert "applying the model failed" in error_text(errors[0][1]) and "\n\nSee " in error_text(errors[0][1])
    assert controller.apply_task is None
    session = controller.session
    assert session.status == "finished" and session.imported_rounds == [1, 2, 3], session.log

    again = controller.start(settings, lambda: Session(volume, annotation, tiny(rounds=1, iterations_per_round=4), tmp_path),
                             tmp_path)
    assert again is controller.session and again.running  # the probe's report is reused: started at once
    drive(lambda: not controller.busy())
    assert again.status == "finished" and not errors[1:]
    controller.shutdown()  # the scene closes: a later Start must not find a "running" session nobody polls
    assert controller.session is None and not controller.busy()
