"""Work split across ranks and gathered back: every rank ends up holding the same result.

Everything that is not a gradient step (pseudo-labelling, validation, test prediction) is split round-robin over
the ranks (:meth:`~.context.DistContext.share`) and gathered with ``torch.distributed``'s object collectives, so
each rank computes 1/N of it and all of them continue with identical data: the decisions taken from it (early
stopping, learning-rate steps, the next round's pseudo-labels) are then the same on every rank. In a one-process
run every helper here is the plain loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .context import current

T = TypeVar("T")
R = TypeVar("R")


def all_gather_objects(value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` in one process)."""
    context = current()
    if context is None:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every rank (``value`` itself in one process)."""
    context = current()
    if context is None:
        return value
    import torch.distributed as dist

    box = [value if context.rank == source else None]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def map_shared(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[function(item) for item in items]``, each rank computing its round-robin share; every rank gets all
    results in ``items``' order. ``function`` must return something picklable (numbers, numpy arrays, dicts)."""
    context = current()
    if context is None:
        return [function(item) for item in items]
    mine = {index: function(items[index]) for index in context.share(len(items))}
    results: dict[int, R] = {}
    for part in all_gather_objects(mine):
        results.update(part)
    return [results[index] for index in range(len(items))]


def sum_across(value: float) -> float:
    """The sum of a number over the ranks (itself in one process), identical on every rank."""
    return float(sum(all_gather_objects(float(value))))


def barrier() -> None:
    """Wait for every rank (no-op in one process), e.g. before rank 0's result is read by the others."""
    context = current()
    if context is None:
        return
    import torch.distributed as dist

    dist.barrier()


def merge_owned(owned: dict[int, Any]) -> dict[int, Any]:
    """Every rank's ``{index: result}`` for the indices it owns, merged: the same full dict on every rank."""
    merged: dict[int, Any] = {}
    for part in all_gather_objects(owned):
        merged.update(part)
    return merged


def agreed_digest(arrays: Sequence[Any], what: str) -> str:
    """SHA-256 of ``arrays`` (numpy), checked equal on every rank; a difference is an error naming ``what``.

    Ranks that should hold the same data (pseudo-labels after a round) prove it with one small all-gather, so a
    silent divergence (a nondeterministic kernel, a missed update) stops the run instead of training N models.
    """
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    text = digest.hexdigest()
    digests = all_gather_objects(text)
    if len(set(digests)) > 1:
        from ..errors import SparseSegError

        differing = [rank for rank, d in enumerate(digests) if d != digests[0]]
        raise SparseSegError(f"the ranks hold different {what} (ranks {differing} differ from rank 0)",
                             "This is a bug or a nondeterministic kernel; rerun in one process and report it.")
    return text
