"""Parsing of the command line's shared values (``--option KEY=VALUE`` lists, case-list files).

Kept apart from :mod:`SparseSegLib.cli` so the launcher and the benchmark commands that read the same values do
not import the command line module, which imports them (no import circle).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import SparseSegError


def read_case_list(path: Path) -> list[str]:
    """Case ids from a text file (one per line, ``#`` comments) or a JSON list."""
    if not path.is_file():
        raise SparseSegError(f"case list not found: {path}", "Give a text file with one case id per line.")
    text = path.read_text().strip()
    ids = json.loads(text) if text.startswith("[") else [line.strip() for line in text.splitlines()]
    return [i for i in ids if i and not i.startswith("#")]


def parse_options(items: list[str]) -> dict:
    """``["theta=0.8", "fuse_axes=true"]`` -> ``{"theta": 0.8, "fuse_axes": True}`` (JSON values, else text)."""
    options = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise SparseSegError(f"cannot parse --option {item!r}", "Write it as KEY=VALUE, e.g. --option theta=0.8.")
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    return options
