"""The job protocol without a worker process: job.json validation, events, atomic files, annotated
regions, and the torch-free client (job creation from arrays, outcomes of crashed workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from SparseSegLib.case import Geometry
from SparseSegLib.errors import SparseSegError
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.atomic import atomic_path, atomic_write_bytes, atomic_write_json, is_disk_full, remove_temporaries
from SparseSegLib.jobs.client import Job, JobOutcome
from SparseSegLib.jobs.events import EventReader, EventWriter, format_event, read_events, validate_event
from SparseSegLib.jobs.regions import annotated_mask, boxes_mask, slices_mask
from SparseSegLib.jobs.schema import PARAMETER_DEFAULTS, SCHEMA_VERSION, make_job, read_job, validate_job

REPO_ROOT = Path(__file__).resolve().parents[1]


def painted(label: np.ndarray, slices=(12, 17, 22), axis: int = 0) -> np.ndarray:
    """What a user painting ``slices`` along ``axis`` leaves: the label on those slices, 0 elsewhere."""
    result = np.zeros_like(label)
    index = [slice(None)] * 3
    index[axis] = list(slices)
    result[tuple(index)] = label[tuple(index)]
    return result


def minimal_job(**changes) -> dict:
    job = {"schema_version": 1, "method": "sparse-only",
           "inputs": {"image": "inputs/image.nrrd", "annotation": "inputs/annotation.nrrd"}}
    job.update(changes)
    return job


# --------------------------------------------------------------------------------------------------
# job.json


def test_minimal_job_gets_defaults(tmp_path):
    spec = validate_job(minimal_job(), tmp_path)
    assert spec.method == "sparse-only"
    assert spec.image == tmp_path.resolve() / "inputs" / "image.nrrd"
    assert spec.region == {"kind": "slices", "axis": "auto"}
    assert spec.parameters == PARAMETER_DEFAULTS
    assert spec.rounds is None and spec.device == "auto" and spec.seed == 0 and spec.reference is None  # None: the method decides


def test_full_job_round_trips_through_make_job(tmp_path):
    job = make_job("sparse-only", "/data/image.nrrd", "seg.seg.nrrd", region={"kind": "boxes", "boxes": [
        {"ijk": [[1, 2, 3], [4, 5, 6]]}, {"ras": [[-1.5, 2, 3], [4, 5.5, 6]]}]}, reference="ref.nii.gz",
        classes={1: {"name": "Anterior", "color": [1, 0, 0]}, 2: "Posterior"},
        parameters={"rounds": 4, "iterations_per_round": 30, "patch_size": [64, 48], "save_probabilities": True},
        device="cuda:1", seed=7, case_id="hippo")
    spec = validate_job(json.loads(json.dumps(job)), tmp_path)
    assert spec.image == Path("/data/image.nrrd")
    assert spec.annotation == tmp_path.resolve() / "seg.seg.nrrd"
    assert spec.region["boxes"][1] == {"ras": [[-1.5, 2.0, 3.0], [4.0, 5.5, 6.0]]}
    assert spec.class_names() == {1: "Anterior", 2: "Posterior"} and spec.class_colors() == {1: (1.0, 0.0, 0.0)}
    assert spec.parameters["rounds"] == 4 and spec.parameters["patch_size"] == [64, 48]
    assert spec.device == "cuda:1" and spec.seed == 7 and spec.case_id == "hippo"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"parameters": {"round": 3}}, ["unknown key 'parameters.round'", "Did you mean 'rounds'"]),
        ({"colour": 1}, ["unknown key 'colour'", "Allowed keys"]),
        ({"parameters": {"rounds": 0}}, ["parameters.rounds", "from 1 to 1000", "not 0"]),
        ({"parameters": {"rounds": True}}, ["parameters.rounds", "whole number", "not true"]),
        ({"parameters": {"learning_rate": -1}}, ["parameters.learning_rate", "positive"]),
        ({"parameters": {"network": "4d"}}, ["parameters.network", "'4d'", "Allowed: 2d, 3d"]),
        ({"parameters": {"patch_size": [64]}}, ["parameters.patch_size", "list of 2"]),
        ({"parameters": {"save_probabilities": "yes"}}, ["parameters.save_probabilities", "true or false"]),
        ({"device": "gpu"}, ["device", "'gpu'", "cuda:N"]),
        ({"seed": -1}, ["seed", ">= 0"]),
        ({"region": {"kind": "circle"}}, ["region.kind", "slices, boxes, mask, full"]),
        ({"region": {"kind": "slices", "axis": 3}}, ["region.axis", "auto"]),
        ({"region": {"kind": "slices", "boxes": []}}, ["unknown key 'region.boxes'"]),
        ({"region": {"kind": "boxes", "boxes": []}}, ["region.boxes", "non-empty list"]),
        ({"region": {"kind": "boxes", "boxes": [{"ijk": [[1, 2], [3, 4]]}]}}, ["region.boxes[0].ijk", "two corners"]),
        ({"region": {"kind": "boxes", "boxes": [{"ijk": [[1, 2, 3.5], [3, 4, 5]]}]}}, ["region.boxes[0].ijk", "whole number"]),
        ({"region": {"kind": "boxes", "boxes": [{"lps": [[1, 2, 3], [3, 4, 5]]}]}}, ["region.boxes[0]", '"ijk" or "ras"']),
        ({"region": {"kind": "mask"}}, ["region.mask", "missing"]),
        ({"classes": {"0": "Background"}}, ["classes.0", "not a class value"]),
        ({"classes": {"1": {"name": "A", "color": [2, 0, 0]}}}, ["classes.1.color", "0 to 1"]),
        ({"schema_version": 2}, ["schema_version", "newer", "Upgrade"]),
        ({"method": ""}, ["method", "non-empty string"]),
        ({"inputs": {"image": "a.nrrd"}}, ["inputs.annotation", "missing"]),
        ({"inputs": {"image": "a.nrrd", "annotation": "b.nrrd", "labels": "c"}}, ["unknown key 'inputs.labels'"]),
    ],
)
def test_invalid_job_names_key_and_allowed_values(tmp_path, change, words):
    with pytest.raises(SparseSegError) as raised:
        validate_job(minimal_job(**change), tmp_path)
    text = raised.value.message + " | " + raised.value.hint
    for word in words:
        assert word in text, text
    assert raised.value.hint


@pytest.mark.parametrize("missing", ["schema_version", "method", "inputs"])
def test_missing_required_key(tmp_path, missing):
    job = minimal_job()
    del job[missing]
    with pytest.raises(SparseSegError, match=f"missing key '{missing}'"):
        validate_job(job, tmp_path)


def test_read_job_reports_json_syntax_and_missing_file(tmp_path):
    with pytest.raises(SparseSegError, match="no job.json"):
        read_job(tmp_path)
    (tmp_path / "job.json").write_text('{"schema_version": 1,\n "method": "x",,}')
    with pytest.raises(SparseSegError, match=r"not valid JSON \(line 2"):
        read_job(tmp_path)
    with pytest.raises(SparseSegError, match="job folder not found"):
        read_job(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------------
# events.jsonl


def test_events_round_trip_with_strict_json(tmp_path):
    path = tmp_path / "events.jsonl"
    echoed = []
    with EventWriter(path, echo=echoed.append) as writer:
        writer.emit("started", pid=1, method="m", rounds=2, resume_from=0, device="cpu")
        writer.emit("progress", round=1, rounds=2, step=3, total=10, loss=float("nan"), eta_s=np.float32(1.5))
        writer.emit("round", round=1, rounds=2, files={"label": "rounds/001/label.nrrd"}, metrics={"hd95": float("inf")})
    events = read_events(path)
    assert [e["event"] for e in events] == ["started", "progress", "round"] == [e["event"] for e in echoed]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[1]["loss"] is None and events[1]["eta_s"] == 1.5 and events[2]["metrics"]["hd95"] is None
    assert all(not validate_event(e) for e in events)
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert "round 1/2 written" in format_event(events[2])


def test_reader_tolerates_partial_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.poll() == []  # no file yet
    line1 = json.dumps({"event": "log", "seq": 1, "time": 0, "message": "one"}) + "\n"
    line2 = json.dumps({"event": "log", "seq": 2, "time": 0, "message": "two"}) + "\n"
    with open(path, "w") as handle:
        handle.write(line1 + line2[:10])
    assert [e["message"] for e in reader.poll()] == ["one"]
    assert reader.poll() == []  # the half line is kept back, not returned broken
    assert not reader.caught_up() or reader.partial_bytes == 10
    with open(path, "a") as handle:
        handle.write(line2[10:])
    assert [e["message"] for e in reader.poll()] == ["two"]
    assert reader.poll() == [] and reader.caught_up()


def test_writer_drops_a_killed_writers_partial_line_and_continues_seq(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as writer:
        writer.emit("log", message="first")
    with open(path, "a") as handle:
        handle.write('{"event":"log","seq":2,"ti')  # what kill -9 in the middle of a write can leave
    reader = EventReader(path)
    assert len(reader.poll()) == 1
    with EventWriter(path) as writer:
        writer.emit("log", message="after resume")
    events = reader.poll()
    assert [(e["seq"], e["message"]) for e in events] == [(2, "after resume")]
    assert all(not validate_event(e) for e in read_events(path))


def test_reader_drains_large_backlog_in_bounded_polls_and_flags_invalid_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as writer:
        for index in range(2000):
            writer.emit("log", message=f"line {index}")
    with open(path, "a") as handle:
        handle.write("this is not json\n")
    reader = EventReader(path, max_bytes=16 << 10)
    first = reader.poll()
    assert 0 < len(first) < 2000  # bounded work per poll
    rest = reader.read_all()
    events = first + rest
    assert [e["seq"] for e in events[:-1]] == list(range(1, 2001))
    assert events[-1]["event"] == "invalid"


def test_reader_restarts_when_the_file_is_recreated(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as writer:
        for _ in range(3):
            writer.emit("log", message="x")
    reader = EventReader(path)
    assert len(reader.poll()) == 3
    path.unlink()
    with EventWriter(path) as writer:
        writer.emit("log", message="new")  # seq 1 again: a different job in the same place
    assert reader.poll() == []  # seq already seen: skipped rather than duplicated


# --------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "file.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_bytes(target, b'{"a": 2}')
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]
    (target.parent / ".tmp-123-file.json").write_bytes(b"half")
    assert remove_temporaries(target.parent) == 1
    with pytest.raises(ValueError):
        atomic_write_json(target, {"bad": float("nan")})
    assert json.loads(target.read_text()) == {"a": 2}


def test_atomic_path_replaces_only_when_the_writer_finishes(tmp_path):
    """The context manager behind every atomic write (images, models, results): a writer that fails half-way
    leaves the old file whole and no temporary; the temporary keeps the target's extension (SimpleITK picks
    the format from it) and lives in the target's folder (the rename stays on one file system)."""
    target = tmp_path / "new" / "label.nii.gz"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.endswith("label.nii.gz")
        temporary.write_bytes(b"old")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"old"
    for sync in (True, False):
        with pytest.raises(RuntimeError, match="writer died"):
            with atomic_path(target, sync=sync) as temporary:
                temporary.write_bytes(b"ha")
                raise RuntimeError("writer died")
        assert target.read_bytes() == b"old"
        assert [p.name for p in target.parent.iterdir()] == ["label.nii.gz"]
    with atomic_path(target, sync=False) as temporary:
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_disk_full_is_recognised():
    import errno

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EFBIG, "File too large"))
    wrapped = SparseSegError("cannot write x: File too large", "hint")
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


# --------------------------------------------------------------------------------------------------
# annotated regions


def test_slices_region_finds_the_painted_axis(sample_label):
    for axis in (0, 1, 2):
        paint = painted(sample_label, slices=(15, 18), axis=axis)
        mask, chosen, slices = slices_mask(paint, "auto")
        assert chosen == axis and slices == [15, 18]
        expected = np.zeros(paint.shape, bool)
        index = [slice(None)] * 3
        index[axis] = [15, 18]
        expected[tuple(index)] = True
        assert np.array_equal(mask, expected)
    mask, chosen, slices = slices_mask(painted(sample_label, (15, 18), axis=0), 1)
    assert chosen == 1 and len(slices) > 2  # forced along another axis: every j-slice touched by paint
    with pytest.raises(SparseSegError, match="no painted voxel"):
        slices_mask(np.zeros((4, 5, 6), np.uint8))


def test_ijk_boxes_are_inclusive_and_clipped():
    geometry = Geometry(size=(10, 8, 6))  # i, j, k -> arrays (6, 8, 10)
    mask = boxes_mask([{"ijk": [[2, 1, 0], [4, 3, 1]]}, {"ijk": [[8, 6, 4], [20, 20, 20]]}], geometry)
    assert mask.shape == (6, 8, 10)
    assert mask[0:2, 1:4, 2:5].all() and mask[4:6, 6:8, 8:10].all()
    assert mask.sum() == 3 * 3 * 2 + 2 * 2 * 2
    with pytest.raises(SparseSegError, match="ROI box 1 .* holds no voxel"):
        boxes_mask([{"ijk": [[20, 0, 0], [30, 5, 5]]}], geometry)


def test_ras_boxes_match_the_same_box_in_voxels(sample_case, rotated_geometry):
    for geometry in (sample_case.geometry, rotated_geometry):
        corners_ijk = np.array([[1, 2, 1], [4, 4, 3]])
        by_voxel = boxes_mask([{"ijk": corners_ijk.tolist()}], geometry)
        if geometry is sample_case.geometry:  # axis-aligned (flipped) grid: the RAS box of the corners is exact
            ras = (geometry.ijk_to_ras() @ np.c_[corners_ijk, np.ones(2)].T).T[:, :3]
            by_ras = boxes_mask([{"ras": ras.tolist()}], geometry)
            assert np.array_equal(by_ras, by_voxel)
        else:  # rotated grid: an axis-aligned RAS box holds exactly the voxels whose centres lie in it
            matrix = geometry.ijk_to_ras()
            ras = (matrix @ np.c_[corners_ijk, np.ones(2)].T).T[:, :3]
            by_ras = boxes_mask([{"ras": ras.tolist()}], geometry)
            k, j, i = np.nonzero(by_ras)
            centres = (matrix @ np.stack([i, j, k, np.ones_like(i)]))[:3].T
            low, high = ras.min(axis=0), ras.max(axis=0)
            assert by_ras.any() and np.all((centres >= low - 1e-6) & (centres <= high + 1e-6))
            kk, jj, ii = np.indices(geometry.shape)
            every = (matrix @ np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)]))[:3].T
            inside = np.all((every >= low - 1e-6) & (every <= high + 1e-6), axis=1).reshape(geometry.shape)
            assert np.array_equal(inside, by_ras)


def test_annotated_mask_kinds(sample_case):
    paint = painted(sample_case.label)
    mask, text = annotated_mask({"kind": "slices", "axis": "auto"}, paint, sample_case.geometry)
    assert "3 painted slice(s) along axis 0 (k): 12, 17, 22" in text and mask[[12, 17, 22]].all()
    mask, text = annotated_mask({"kind": "full"}, paint, sample_case.geometry)
    assert mask.all()
    explicit = np.zeros(sample_case.image.shape, np.uint8)
    explicit[3] = 5
    mask, _ = annotated_mask({"kind": "mask"}, paint, sample_case.geometry, explicit)
    assert mask.sum() == explicit[3].size


# --------------------------------------------------------------------------------------------------
# client without torch


def test_client_does_not_import_torch(tmp_path):
    """The GUI process imports the client; it must not pull in torch, MONAI or the engine."""
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from SparseSegLib.case import Geometry
        from SparseSegLib.jobs.client import Job
        geometry = Geometry(size=(8, 8, 4))
        label = np.zeros(geometry.shape, np.uint8); label[2, 3:5, 3:5] = 1
        job = Job.create({str(tmp_path / 'job')!r}, np.ones(geometry.shape, np.float32), geometry, label, "sparse-only")
        job.poll(); job.outcome()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai") or m.startswith("SparseSegLib.engine")
                       or m.startswith("SparseSegLib.methods"))
        assert not heavy, heavy
        print("clean")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout


def test_create_job_from_arrays_writes_valid_inputs(tmp_path, sample_case):
    from SparseSegLib.io import read_image, read_label

    job = Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, painted(sample_case.label), "sparse-only",
                     reference=sample_case.label, classes={1: "Anterior", 2: {"name": "Posterior", "color": [0, 0, 1]}},
                     parameters={"rounds": 2})
    spec = job.spec
    assert spec.rounds == 2 and spec.reference is not None and spec.class_names() == {1: "Anterior", 2: "Posterior"}
    image, geometry = read_image(spec.image)
    assert geometry.matches(sample_case.geometry) and np.array_equal(image, sample_case.image)
    assert np.array_equal(read_label(spec.annotation, geometry), painted(sample_case.label))
    with pytest.raises(SparseSegError, match="already holds a job"):
        Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, painted(sample_case.label), "sparse-only")
    with pytest.raises(SparseSegError, match="no painted voxel"):
        Job.create(tmp_path / "empty", sample_case.image, sample_case.geometry, np.zeros_like(sample_case.label), "sparse-only")
    assert not (tmp_path / "empty" / "job.json").exists()
    with pytest.raises(SparseSegError, match="annotation array has shape"):
        Job.create(tmp_path / "bad", sample_case.image, sample_case.geometry, sample_case.label[1:], "sparse-only")


def test_create_job_from_files_checks_paths(tmp_path, sample_dir):
    image = sample_dir / "imagesTr" / "hippocampus_001.nii.gz"
    job = Job.create_from_files(tmp_path / "job", image, sample_dir / "labelsTr" / "hippocampus_001.nii.gz", "full",
                                region={"kind": "full"})
    assert job.spec.image == image.resolve() and job.spec.case_id == "hippocampus_001"
    with pytest.raises(SparseSegError, match="annotation file not found"):
        Job.create_from_files(tmp_path / "other", image, tmp_path / "missing.nrrd", "sparse-only")


def test_crashed_worker_is_reported_with_exit_code_and_output(tmp_path, sample_case):
    """A worker that dies without an error event (here: a 'python' that fails at start) is a crash with
    its exit code and the last line of its output."""
    job = Job.create(tmp_path / "job", sample_case.image, sample_case.geometry, painted(sample_case.label), "sparse-only")
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ImportError: no module named torch' >&2\nexit 7\n")
    fake.chmod(0o755)
    job.start(python=fake)
    outcome = job.wait(timeout=30)
    assert outcome.status == "crashed" and outcome.exit_code == 7 and outcome.last_error is None
    assert "exit code 7" in outcome.message and "no module named torch" in outcome.message
    with pytest.raises(SparseSegError, match="cannot start the worker"):
        job.start(python=tmp_path / "no-such-python")


def test_outcome_messages():
    killed = JobOutcome("crashed", -9, [1, 2])
    assert "killed by signal SIGKILL" in killed.message
    failed = JobOutcome("error", 2, [], last_error={"message": "out of GPU memory", "hint": "Use the CPU."})
    assert "exit code 2" in failed.message and "out of GPU memory. Use the CPU." in failed.message


def test_layout_round_bookkeeping(tmp_path):
    for index in (1, 2, 4):
        layout.round_dir(tmp_path, index).mkdir(parents=True)
        (layout.round_dir(tmp_path, index) / layout.ROUND_FILE).write_text("{}")
    layout.round_dir(tmp_path, 5).mkdir()
    assert layout.complete_rounds(tmp_path) == [1, 2, 4]
    assert layout.last_complete_round(tmp_path) == 2
    assert list(layout.round_folders(tmp_path)) == [1, 2, 4, 5]
    assert os.path.basename(layout.checkpoint_path(tmp_path, 3)) == "round-003.pt"
    assert SCHEMA_VERSION == 1


# --------------------------------------------------------------------------------------------------
# the I/O benchmark command (its figures are measured by running it, not here)


def test_worker_io_benchmark_runs_end_to_end_on_a_small_volume(capsys):
    """The benchmark writes and reads rounds through the worker's and client's own code; a tiny run
    checks it still works (it asserts that the label map it reads back is the one it wrote)."""
    from SparseSegLib.benchmarks import worker_io

    assert worker_io.main(["--size", "24", "--events", "50", "--repeat", "1"]) == 0
    printed = capsys.readouterr().out
    for row in ("write round (label map only)", "load round (label + probabilities + uncertainty)",
                "drain all 50 events", "poll, one new event"):
        assert row in printed


def test_a_methods_warning_becomes_a_warning_event_with_a_hint(tmp_path):
    """A method's ``reporter.warning`` reaches the GUI as a ``warning`` event (shown prominently);
    ``reporter.log`` stays a ``log`` event."""
    from SparseSegLib.worker import EventReporter

    with EventWriter(tmp_path / "events.jsonl") as writer:
        reporter = EventReporter(writer, 2)
        reporter.warning("round 2: no foreground on any new slice", "Give more iterations.")
        reporter.log("round 2: 24 new slices")
    warning, log = read_events(tmp_path / "events.jsonl")
    assert warning["event"] == "warning" and warning["message"] == "round 2: no foreground on any new slice"
    assert warning["hint"] == "Give more iterations."
    assert log == {**log, "event": "log", "message": "round 2: 24 new slices"}
