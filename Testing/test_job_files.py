"""The files a worker and the GUI share while a job runs, without a worker process: ``events.jsonl`` (written
by one side, read without blocking by the other) and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SparseSegLib.errors import SparseSegError
from SparseSegLib.jobs.atomic import atomic_path, atomic_write_bytes, atomic_write_json, is_disk_full, remove_temporaries
from SparseSegLib.jobs.events import EventReader, EventWriter, format_event, read_events, validate_event


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
