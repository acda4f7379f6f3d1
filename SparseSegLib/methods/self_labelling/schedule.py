"""Which slices a round labels and how much each counts: the round rule, the number of rounds, slice weights.

Kept apart from the loop because these are pure functions of the labelled-slice masks, tested on their own, and
because the job benchmark (``benchmarks/self_labelling_jobs.py``) plans its rounds with :func:`natural_rounds`
without building a network.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import SparseSegError
from .settings import Settings


def per_side(depth: int, k: float) -> int:
    """Slices added on each side of the labelled block per round: ``k`` of the depth over both sides, at least 1."""
    return max(1, int(round(k * depth / 2)))


def rounds_needed(labelled: np.ndarray, step: int, order: str) -> int:
    """Expansion rounds until every slice of a volume is labelled (``labelled``: bool per slice)."""
    if labelled.all():
        return 0
    if order == "random":
        return int(math.ceil(np.count_nonzero(~labelled) / (2 * step)))
    index = np.flatnonzero(labelled)
    if index.size == 0:
        raise SparseSegError("a training volume has no annotated slice", "Annotate at least one slice per volume.")
    # the farthest unlabelled slice from any labelled one decides
    distance = np.abs(np.arange(labelled.size)[:, None] - index[None]).min(1)
    return int(math.ceil(distance.max() / step))


def natural_rounds(labelled: list[np.ndarray], settings: Settings) -> int:
    """Rounds a run takes by itself: the first model, then until every slice of every volume is labelled
    (``labelled``: per volume, non-zero per annotated slice), then the fusion passes."""
    needed = max(rounds_needed(np.asarray(lab) > 0, per_side(len(lab), settings.k), settings.order) for lab in labelled)
    return 1 + needed + (settings.fusion_passes if settings.fuse_axes else 0)


def next_slices(labelled: np.ndarray, step: int, order: str, rng: np.random.Generator) -> np.ndarray:
    """Slice indices to pseudo-label next: within ``step`` of the labelled block (outward) or at random."""
    free = np.flatnonzero(~labelled)
    if free.size == 0:
        return free
    if order == "random":
        return np.sort(rng.choice(free, size=min(free.size, 2 * step), replace=False))
    index = np.flatnonzero(labelled)
    distance = np.abs(free[:, None] - index[None]).min(1)
    return free[distance <= step]


def slice_weights(depth: int, gt_slices: np.ndarray, mode: str, sigma: float = 0.2) -> np.ndarray:
    """Loss weight per slice for pseudo-labels by normalised distance to the nearest GT slice."""
    distance = np.abs(np.arange(depth)[:, None] - np.flatnonzero(gt_slices)[None]).min(1) / max(1, depth)
    if mode == "gaussian":
        return np.exp(-(distance**2) / (2 * sigma**2)).astype(np.float32)
    if mode == "stepwise":
        return np.select([distance <= 0.1, distance <= 0.2, distance <= 0.3], [1.0, 0.75, 0.5], 0.25).astype(np.float32)
    return np.ones(depth, np.float32)
