"""Progress on the terminal: a live bar on a TTY, a line every 10 % in logs and CI."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TerminalReporter:
    """Implements the methods' ``Reporter`` protocol for the command line."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "") -> None:
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile: dict[str, int] = {}
        self.started = time.perf_counter()

    def progress(self, stage: str, step: int, total: int, loss: float | None, seconds_per_step: float) -> None:
        eta = format_duration((total - step) * seconds_per_step)
        width = 24
        filled = int(width * step / max(total, 1))
        loss_text = f"loss {loss:.3f} " if loss is not None else ""  # a registration round has no loss
        text = (
            f"{self.prefix}{stage} [{'#' * filled}{'.' * (width - filled)}] {step}/{total} "
            f"{loss_text}{seconds_per_step:.2f} s/it ETA {eta}"
        )
        if self.live:
            self.stream.write("\r" + text + (" " * 4) + ("\n" if step == total else ""))
            self.stream.flush()
            return
        decile = int(10 * step / max(total, 1))
        if decile != self._last_decile.get(stage) or step == total:
            self._last_decile[stage] = decile
            print(text, file=self.stream, flush=True)

    def log(self, message: str) -> None:
        print(f"{self.prefix}{message}", file=self.stream, flush=True)

    def warning(self, message: str, hint: str) -> None:
        print(f"{self.prefix}warning: {message}. {hint}", file=self.stream, flush=True)
