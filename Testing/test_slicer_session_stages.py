"""The Slicer session's stages on a real MRML scene (``slicer-core`` wheel) with real worker processes: Stop
mid-round then Continue with a corrected slice, Start with the module's defaults then Continue, the last events
read after the worker exits, and Accept against a late ``cancelled``.

Training is tiny (sparse-only, 2D, a few iterations, one thread) so each worker run takes seconds; the shared
helpers are in slicer_session_support.py, the ``scene`` fixture in conftest.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from SparseSegLib.io import read_label  # noqa: E402
from SparseSegLib.jobs import layout  # noqa: E402
from SparseSegLib.session import mrml  # noqa: E402
from SparseSegLib.session.headless import add_volume  # noqa: E402
from SparseSegLib.session.session import ROUND_TAG, Session, SessionSettings  # noqa: E402

from slicer_session_support import (  # noqa: E402
    both_classes_slice,
    correct_slice,
    finished,
    paint,
    run_until,
    temporary_nodes,
    tiny,
)

pytestmark = pytest.mark.mrml


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
    planes, _ = session.find_corrections()
    assert planes == {0: [c]}

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


def test_start_defaults_run_until_the_method_is_done_and_continue_runs_a_new_stage(scene, sample_case, tmp_path):
    """The module's Start with its defaults (SparseSegLib.defaults: propagate, rounds left to the method): the
    progress bar follows the method's plan, the job stops by itself, and Continue with one slice corrected in another
    view (sagittal, of an axially painted scan) runs the method's next stage with that slice, and only that slice,
    as ground truth (only the iterations are cut to keep the test short)."""
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
    present = np.flatnonzero((sample_case.label > 0).any(axis=(0, 1)))
    i = int((present[0] + present[-1]) // 2)
    correct_slice(session, volume, sample_case.label, i, axis=2)
    second = session.continue_session()
    assert session.corrections[-1]["axis"] == 2 and session.corrections[-1]["slices"] == [i]
    annotated = read_label(second.directory / "inputs/annotated.nrrd").astype(bool)
    expected = np.zeros_like(annotated)
    expected[k] = True
    expected[:, :, i] = True  # not every axial slice the sagittal correction crossed
    assert np.array_equal(annotated, expected)
    assert json.loads((second.directory / "job.json").read_text())["parameters"]["rounds"] is None
    run_until(session, finished(session))
    assert session.status == "finished", session.log
    assert session.imported_rounds == [1, 2, 3, 4] and session.planned_rounds() == 4
    assert np.array_equal(session.result_label()[:, :, i], sample_case.label[:, :, i])
    assert np.array_equal(session.result_label()[k], sample_case.label[k])


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
