"""Checks of parsed JSON values whose messages say where the problem is: the file, the key path and what is allowed.

:mod:`.schema` validates ``job.json`` with them. Standard library only, like the schema, so the GUI process can
validate a job before starting a worker.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import SparseSegError


class _Checker:
    """Collects the context (file, key path) so every message says where the problem is."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str, hint: str) -> None:
        where = f"{self.source}: " if self.source else ""
        raise SparseSegError(f"{where}{key} {problem}".rstrip(), hint)

    def mapping(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"must be a JSON object, not {_describe(value)}", f"Write {key} as {{...}}.")
        return value

    def known_keys(self, value: dict, key: str, allowed: tuple[str, ...]) -> None:
        for name in value:
            if name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1)
                suggestion = f" Did you mean {close[0]!r}?" if close else ""
                where = f"{key}." if key else ""
                self.fail(f"unknown key '{where}{name}'", "",
                          f"Allowed keys{(' in ' + key) if key else ''}: {', '.join(allowed)}.{suggestion}")

    def integer(self, value: Any, key: str, low: int | None = None, high: int | None = None, none: bool = False) -> int | None:
        if value is None and none:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
                value = int(value)
            else:
                self.fail(key, f"must be a whole number{_range(low, high)}{' or null' if none else ''}, "
                               f"not {_describe(value)}", f"Set {key} to a whole number{_range(low, high)}.")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"must be{_range(low, high)}, not {value}", f"Set {key} to a whole number{_range(low, high)}.")
        return int(value)

    def number(self, value: Any, key: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"must be a number, not {_describe(value)}", f"Set {key} to a number.")
        if positive and value <= 0:
            self.fail(key, f"must be positive, not {value}", f"Set {key} to a number > 0.")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_describe(value)}", f"Set {key} to true or false.")
        return value

    def string(self, value: Any, key: str, choices: tuple | None = None, pattern: re.Pattern | None = None,
               allowed_text: str | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, not {_describe(value)}",
                      f"Allowed: {allowed_text or ', '.join(map(str, choices or ()))}." if (choices or allowed_text)
                      else f"Set {key} to a string.")
        if choices is not None and value not in choices:
            self.fail(key, f"is {value!r}, which is not allowed", f"Allowed: {', '.join(map(str, choices))}.")
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"is {value!r}, which is not allowed", f"Allowed: {allowed_text}.")
        return value

    def path(self, value: Any, key: str, directory: Path) -> Path:
        text = self.string(value, key, allowed_text="a file path, relative to the job folder or absolute")
        path = Path(text)
        return path if path.is_absolute() else (directory / path)


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = json.dumps(value) if isinstance(value, (str, int, float)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
