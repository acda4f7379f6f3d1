"""``events.jsonl``: the worker's running commentary, one JSON object per line.

Every event has ``event`` (its type), ``seq`` (1, 2, 3, ... across the whole job, resumes included)
and ``time`` (seconds since the epoch). The types and their fields:

============ ==================================================================================
started      pid, method, rounds, resume_from (0 for a fresh run), device, version
progress     round, rounds, step, total, loss, seconds_per_step, eta_s (this round), stage
round        round, rounds, files ({"label": "rounds/001/label.nrrd", ...} relative to the job
             folder), metrics (vs the reference, when one is given), training, elapsed_s
log          message
warning      message, hint
error        message, hint, kind ("user", "input", "oom", "disk", "internal"), log (for bugs)
cancelled    round (the newest complete round), reason ("CANCEL file" or "SIGTERM")
finished     rounds, label (path of the final label map), files
============ ==================================================================================

The writer appends each event with a single ``write`` and flushes it (``fsync`` for round, error,
cancelled and finished). A reader may still catch a line half written, or see the tail a killed
worker left behind, so :class:`EventReader` only consumes complete lines and keeps its file offset
at the start of a partial one until the rest arrives. This module needs only the standard library.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "started": ("pid", "method", "rounds", "resume_from", "device"),
    "progress": ("round", "rounds", "step", "total", "loss", "eta_s"),
    "round": ("round", "rounds", "files"),
    "log": ("message",),
    "warning": ("message", "hint"),
    "error": ("message", "hint", "kind"),
    "cancelled": ("round", "reason"),
    "finished": ("rounds", "label"),
}
EVENT_TYPES = tuple(EVENT_FIELDS)
#: Events that are ``fsync``ed: the ones a user must not lose to a power cut.
DURABLE_EVENTS = frozenset({"round", "error", "cancelled", "finished"})
TERMINAL_EVENTS = frozenset({"error", "cancelled", "finished"})
ERROR_KINDS = ("user", "input", "oom", "disk", "internal")


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars made plain and NaN/inf replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy / torch scalar
        return jsonable(value.item())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def validate_event(event: Any) -> list[str]:
    """Problems with one parsed event (empty when it is well formed)."""
    if not isinstance(event, dict):
        return [f"not a JSON object: {event!r:.80}"]
    problems = []
    kind = event.get("event")
    if kind not in EVENT_FIELDS:
        return [f"unknown event type {kind!r}"]
    for name in ("seq", "time"):
        if not isinstance(event.get(name), (int, float)) or isinstance(event.get(name), bool):
            problems.append(f"{kind}: {name} missing or not a number")
    for name in EVENT_FIELDS[kind]:
        if name not in event:
            problems.append(f"{kind}: field {name!r} missing")
    if kind == "round" and not isinstance(event.get("files"), dict):
        problems.append("round: files must be an object")
    if kind == "error" and event.get("kind") not in ERROR_KINDS:
        problems.append(f"error: kind {event.get('kind')!r} not one of {ERROR_KINDS}")
    return problems


def _last_line_info(path: Path) -> tuple[int, int]:
    """``(offset just after the last newline, seq of the last complete event)`` of an events file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0, 0
    with open(path, "rb") as handle:
        block = 1 << 16
        end = size
        tail = b""
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            tail = handle.read(end - start) + tail
            newline = tail.rfind(b"\n")
            if newline >= 0 or start == 0:
                break
            end = start
        newline = tail.rfind(b"\n")
        if newline < 0:
            return 0, 0
        complete_end = size - len(tail) + newline + 1
        # the seq of the last complete event: scan back over complete lines until one parses
        lines = tail[: newline].split(b"\n")
        for line in reversed(lines):
            try:
                seq = json.loads(line).get("seq")
                if isinstance(seq, int):
                    return complete_end, seq
            except (ValueError, AttributeError):
                continue
        return complete_end, 0


class EventWriter:
    """Appends events to ``events.jsonl``; only one writer (the worker holding the job lock) at a time.

    Opening drops a partial last line left by a killed writer and continues its ``seq``. ``echo``
    (e.g. the terminal) is told about every event after it is written.
    """

    def __init__(self, path: str | os.PathLike, echo: Callable[[dict], None] | None = None) -> None:
        self.path = Path(path)
        self.echo = echo
        self.path.parent.mkdir(parents=True, exist_ok=True)
        complete_end, self.seq = _last_line_info(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o644)
        if os.fstat(self._fd).st_size > complete_end:
            os.truncate(self.path, complete_end)  # a partial line from a killed writer

    def emit(self, kind: str, /, **fields: Any) -> dict:
        """Write one event (flushed; fsynced for durable ones) and return it."""
        self.seq += 1
        event = {"event": kind, "seq": self.seq, "time": round(time.time(), 3), **jsonable(fields)}
        line = (json.dumps(event, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        if kind in DURABLE_EVENTS:
            os.fsync(self._fd)
        if self.echo is not None:
            self.echo(event)
        return event

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventReader:
    """Reads new events since the last call, without blocking and without ever returning half a line.

    ``poll()`` reads from the remembered offset to the end of the file (at most ``max_bytes`` per
    call, so a huge backlog is drained over several polls instead of freezing a GUI; 256 KiB is
    about 1,600 events, a few ms of parsing), parses the
    complete lines and leaves the offset at the start of a partial last line. If the file shrank
    (recreated), reading starts over and events with a ``seq`` already seen are skipped. A complete
    line that is not valid JSON comes back as ``{"event": "invalid", "line": ..., "error": ...}``.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = 256 << 10) -> None:
        self.path = Path(path)
        self.offset = 0
        self.last_seq = 0
        self.max_bytes = max_bytes
        self.partial_bytes = 0  # size of the incomplete tail seen at the last poll

    def poll(self) -> list[dict]:
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size < self.offset:  # truncated or recreated: start over, skip what was seen
                self.offset = 0
            if size == self.offset:
                self.partial_bytes = 0
                return []
            handle.seek(self.offset)
            data = handle.read(min(size - self.offset, self.max_bytes))
        end = data.rfind(b"\n")
        if end < 0 and len(data) < size - self.offset:  # one line longer than max_bytes: read all of it
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(size - self.offset)
            end = data.rfind(b"\n")
        if end < 0:
            self.partial_bytes = len(data)
            return []
        self.partial_bytes = len(data) - end - 1
        self.offset += end + 1
        lines = [line for line in data[:end].split(b"\n") if line.strip()]
        try:  # one parse for the whole chunk (the usual case); line by line only when a line is broken
            parsed = json.loads(b"[" + b",".join(lines) + b"]")
            if len(parsed) != len(lines) or not all(isinstance(event, dict) for event in parsed):
                raise ValueError("a line is not exactly one JSON object")
        except ValueError:
            parsed = [_parse_line(line) for line in lines]
        events = []
        for event in parsed:
            seq = event.get("seq") if isinstance(event, dict) else None
            if isinstance(seq, int):
                if seq <= self.last_seq:
                    continue
                self.last_seq = seq
            events.append(event)
        return events

    def read_all(self) -> list[dict]:
        """Every remaining complete event (loops :meth:`poll` until the backlog is drained)."""
        events = []
        while True:
            batch = self.poll()
            events.extend(batch)
            if not batch and self.caught_up():
                return events

    def caught_up(self) -> bool:
        """True when nothing but (at most) a partial last line is left unread."""
        try:
            return self.path.stat().st_size - self.offset <= self.partial_bytes
        except FileNotFoundError:
            return True


def _parse_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError as error:
        return {"event": "invalid", "line": line[:500].decode("utf-8", "replace"), "error": str(error)}


def read_events(path: str | os.PathLike) -> list[dict]:
    """All complete events of a file (for tests, reports and after the worker has exited)."""
    return EventReader(path).read_all()


def format_event(event: dict) -> str:
    """One human-readable line for an event (the terminal echo of ``sparseseg run``, GUI logs)."""
    kind = event.get("event")
    if kind == "started":
        resumed = f", resuming after round {event['resume_from']}" if event.get("resume_from") else ""
        planned = "rounds until done" if event.get("rounds") is None else f"{event.get('rounds')} round(s)"
        return (f"started `{event.get('method')}`: {planned} on device {event.get('device')} "
                f"(pid {event.get('pid')}{resumed})")
    if kind == "progress":
        total = max(int(event.get("total") or 1), 1)
        step = int(event.get("step") or 0)
        width = 20
        filled = int(width * step / total)
        loss = event.get("loss")
        loss_text = f"loss {loss:.3f}" if isinstance(loss, (int, float)) else ""  # none while registering
        eta = event.get("eta_s")
        eta_text = f"ETA {int(eta) // 60}:{int(eta) % 60:02d}" if isinstance(eta, (int, float)) else ""
        return " ".join(part for part in (f"round {event.get('round')}/{event.get('rounds')}",
                                          f"[{'#' * filled}{'.' * (width - filled)}]", f"{step}/{total}", loss_text,
                                          eta_text) if part)
    if kind == "round":
        text = f"round {event.get('round')}/{event.get('rounds')} written: {event.get('files', {}).get('label')}"
        metrics = event.get("metrics") or {}
        summary = metrics.get("merged") or metrics.get("mean")
        if isinstance(summary, dict) and isinstance(summary.get("dice"), (int, float)):
            text += f" (Dice vs reference {summary['dice']:.3f})"
        suggestion = event.get("suggested_slice")
        if isinstance(suggestion, dict) and suggestion.get("axis") in (0, 1, 2):
            text += f"; annotate next: slice {suggestion.get('index')} along {'kji'[suggestion['axis']]}"
        return text
    if kind in ("warning", "error"):
        hint = f" {event['hint']}" if event.get("hint") else ""
        return f"{kind}: {str(event.get('message', '')).rstrip('.')}.{hint}"
    if kind == "cancelled":
        return f"cancelled ({event.get('reason')}); rounds 1..{event.get('round')} are kept"
    if kind == "finished":
        return f"finished {event.get('rounds')} round(s); final label map: {event.get('label')}"
    if kind == "log":
        return str(event.get("message", ""))
    return json.dumps(event)
