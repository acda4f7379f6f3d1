"""Atomic file writing: a reader sees the old file or the whole new one, never half of it.

The one place in the package that does temporary-name-then-rename, so every file a reader may open
while it is being written (rounds, checkpoints, job.json, saved models, benchmark results) gets the
same guarantee. :func:`atomic_path` yields a temporary name in the target's folder for writers that
only take a file name (SimpleITK, slicerio, ``torch.save``); when the block ends cleanly the file is
``fsync``ed, ``os.replace``d over the target (atomic on POSIX and Windows within one file system) and
the folder is ``fsync``ed so the rename itself survives a power cut; when it raises, the temporary
file is removed. ``sync=False`` skips both fsyncs (still atomic for readers, not crash-durable) for
files that are cheap to make again. A killed writer leaves at most a ``.tmp-*`` file behind, which
:func:`remove_temporaries` cleans up. Standard library only: the Slicer process imports this module.

Disk-full and file-size-limit failures surface as :class:`OSError` (``ENOSPC``, ``EFBIG``,
``EDQUOT``); :func:`is_disk_full` recognises them so callers can turn them into a user error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
    """The temporary name :func:`atomic_path` uses for ``path``: same folder (so the rename stays on one file
    system), hidden, and ending in ``path``'s own name so writers that choose the format by extension
    (SimpleITK: ``.nrrd``, ``.nii.gz``) still do."""
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk.

    Windows' ``FlushFileBuffers`` needs a handle with write access, so the file is opened read-write there.
    """
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
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


@contextmanager
def atomic_path(path: str | os.PathLike, sync: bool = True) -> Iterator[Path]:
    """Yield the temporary name to write ``path``'s new content to; on a clean exit, replace ``path`` with it.

    ``with atomic_path(target) as temporary: sitk.WriteImage(image, str(temporary))``. The folder is
    created if needed. If the block raises (including KeyboardInterrupt), the temporary file is removed
    and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        if sync:
            fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink()
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename, fsync of the folder)."""
    path = Path(path)
    with atomic_path(path, sync) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
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
