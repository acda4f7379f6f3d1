"""Which slice ``propagate`` asks the user to paint next: the middle of the widest unpainted stretch of the object.

Measured on the hippocampus report scans (docs/results/interactive.md): painting the middle of the largest unpainted
gap of the object's extent beat the generic entropy suggestion (the least certain slice) by about 0.1 Dice at three
painted slices. Entropy points at a slice where the two branches disagree, often at the end of the faded
registration or past the object; a propagation gains most from a new anchor where it had to travel farthest. The
extent here is the current result's (the slices that hold predicted foreground), so no reference is needed.
"""

from __future__ import annotations

import numpy as np


def widest_gap_slice(labels: np.ndarray, painted: list[int]) -> int | None:
    """The middle of the longest run of unpainted slices (axis 0) within the predicted object's extent, or None
    when every slice of that extent is painted (or nothing is predicted)."""
    present = np.flatnonzero((labels > 0).any(axis=(1, 2)))
    if present.size == 0:
        return None
    first, last = int(present[0]), int(present[-1])
    painted_set = set(int(p) for p in painted)
    best, start = None, None
    for position in range(first, last + 2):
        free = position <= last and position not in painted_set
        if free and start is None:
            start = position
        elif not free and start is not None:
            run = (position - start, -start)
            if best is None or run > best[0]:
                best = (run, (start + position - 1) // 2)
            start = None
    return None if best is None else int(best[1])
