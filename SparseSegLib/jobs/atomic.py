"""Atomic file writing: a reader sees the old file or the whole new one, never half of it.

Every writer here writes to a temporary name in the target's folder, flushes and ``fsync``s it,
then ``os.replace``s it over the target (atomic on POSIX and Windows within one file system) and
finally ``fsync``s the folder so the rename itself survives a power cut. A killed writer leaves at
most a ``.tmp-*`` file behind, which :func:`remove_temporaries` cleans up.

Disk-full and file-size-limit failures surface as :class:`OSError` (``ENOSPC``, ``EFBIG``,
``EDQUOT``); :func:`is_disk_full` recognises them so callers can turn them into a user error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

#: errno values that mean "the disk (or a quota / file-size limit) has no room for this write".
DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if e is not None)

TEMPORARY_PREFIX = ".tmp-"


def is_disk_full(error: BaseException) -> bool:
    """True for an OSError (or an exception caused by one) that says the disk or a limit is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        text = str(error).lower()
        if "no space left" in text or "file too large" in text or "disk quota" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def temporary_path(path: Path) -> Path:
    """The temporary name :func:`atomic_write_bytes` uses for ``path`` (same folder, hidden)."""
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or creation inside ``path`` durable (a no-op where folders cannot be opened)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink()
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, sync: bool = True) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), sync)


def atomic_write_json(path: str | os.PathLike, data, sync: bool = True) -> Path:
    """Write ``data`` as indented, strict JSON (no NaN) atomically."""
    return atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n", sync)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (round files are listed with it in ``round.json``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``.tmp-*`` leftovers of killed writers in ``folder`` (not recursive); returns how many."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for candidate in folder.iterdir():
        if candidate.name.startswith(TEMPORARY_PREFIX) and candidate.is_file():
            try:
                candidate.unlink()
                removed += 1
            except OSError:
                pass
    return removed
