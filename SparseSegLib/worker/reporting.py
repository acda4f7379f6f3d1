"""The methods' ``Reporter`` protocol, written as worker events."""

from __future__ import annotations

import time

from ..jobs.events import EventWriter


class EventReporter:
    """The methods' ``Reporter`` protocol as worker events (progress throttled to two a second)."""

    def __init__(self, events: EventWriter, rounds: int, interval_s: float = 0.5) -> None:
        self.events = events
        self.rounds = rounds
        self.round = 1
        self.interval_s = interval_s
        self._last = 0.0

    def progress(self, stage: str, step: int, total: int, loss: float | None, seconds_per_step: float) -> None:
        now = time.monotonic()
        if step < total and now - self._last < self.interval_s:
            return
        self._last = now
        self.events.emit("progress", round=self.round, rounds=self.rounds, step=step, total=total, loss=loss,
                         seconds_per_step=round(seconds_per_step, 4), eta_s=round((total - step) * seconds_per_step, 1),
                         stage=stage)

    def log(self, message: str) -> None:
        self.events.emit("log", message=message)

    def warning(self, message: str, hint: str) -> None:
        self.events.emit("warning", message=message, hint=hint)
