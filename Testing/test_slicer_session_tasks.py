"""The Slicer session's background tasks on a real MRML scene (``slicer-core`` wheel) with real worker processes:
Save model and Apply model, the dependency probe, and the module controller that runs them beside a session.

Training is tiny (sparse-only, 2D, a few iterations, one thread) so each worker run takes seconds; the shared
helpers are in slicer_session_support.py, the ``scene`` fixture in conftest.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from SparseSegLib.io import read_label  # noqa: E402
from SparseSegLib.session import mrml  # noqa: E402
from SparseSegLib.session.headless import add_volume  # noqa: E402
from SparseSegLib.session.session import Session  # noqa: E402

from slicer_session_support import both_classes_slice, finished, paint, run_until, tiny  # noqa: E402

pytestmark = pytest.mark.mrml


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
