"""Which whole slice the simulated user paints next.

* ``suggested``: the slice the method names in its final round's ``round.json`` (``suggested_slice``, see
  :mod:`SparseSegLib.jobs.suggestion`): what a user who presses the module's "annotate next" button paints.
* ``worst``: the unpainted slice along the painting axis with the most wrong voxels in the current result, found with the
  reference: an oracle, so an upper bound of what any suggestion can reach.
* ``gap``: the middle of the largest unpainted gap of the object's extent (:func:`gap_slice`): a user who spreads
  slices evenly without help; what the suggestion has to beat.

When a round names no slice, or one already painted, the user does what they would do without help: paint the
middle of the largest unpainted gap in the object's extent (:func:`gap_slice`); the record says so. The
user paints along one array axis (0 = k unless the benchmark's ``--axis`` says otherwise); the suggestion may name
another, which the user follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...annotation import object_extent
from ...errors import SparseSegError
from ...jobs.suggestion import SuggestedSlice

RULES = ("suggested", "worst", "gap")


@dataclass(frozen=True)
class NextSlice:
    """A slice to paint: ``axis`` (array order, 0 = k), ``index``, how it was chosen and why (a fallback)."""

    axis: int
    index: int
    source: str  # "suggested", "worst", "gap"
    note: str = ""

    def as_dict(self) -> dict:
        entry = {"axis": self.axis, "index": self.index, "source": self.source}
        if self.note:
            entry["note"] = self.note
        return entry


def whole_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    """Per slice along ``axis``: True when it is annotated as a whole (painted)."""
    return np.all(np.asarray(mask, bool), axis=tuple(a for a in range(3) if a != axis))


def gap_slice(reference: np.ndarray, mask: np.ndarray, note: str = "", axis: int = 0) -> NextSlice:
    """The middle of the longest run of unpainted slices along ``axis`` inside the object's extent (the user can
    see where the object is); past the extent's ends when all of it is painted."""
    first, last = object_extent(reference, axis)
    painted = whole_slices(mask, axis)
    runs, start = [], None
    for s in range(first, last + 2):
        free = s <= last and not painted[s]
        if free and start is None:
            start = s
        elif not free and start is not None:
            runs.append((s - start, -start, start, s - 1))
            start = None
    if runs:
        _, _, low, high = max(runs)
        return NextSlice(axis, (low + high) // 2, "gap", note)
    outside = [s for s in range(painted.size) if not painted[s]]
    if not outside:
        raise SparseSegError(f"every slice along axis {axis} is painted already", "Nothing is left to paint.")
    centre = (first + last) / 2
    return NextSlice(axis, min(outside, key=lambda s: (abs(s - centre), s)), "gap", note)


def worst_slice(label: np.ndarray, reference: np.ndarray, mask: np.ndarray, axis: int = 0) -> NextSlice:
    """The unpainted slice along ``axis`` with the most voxels where ``label`` differs from ``reference``."""
    other = tuple(a for a in range(3) if a != axis)
    wrong = np.count_nonzero(np.asarray(label) != np.asarray(reference), axis=other).astype(float)
    wrong[whole_slices(mask, axis)] = -1
    index = int(np.argmax(wrong))
    if wrong[index] <= 0:
        return gap_slice(reference, mask, "the result is right on every unpainted slice", axis)
    return NextSlice(axis, index, "worst", f"{int(wrong[index])} wrong voxels")


def suggested_slice(record: dict, reference: np.ndarray, mask: np.ndarray, axis: int = 0) -> NextSlice:
    """The round's suggestion, or :func:`gap_slice` along ``axis`` with the reason when it has none usable."""
    suggestion = SuggestedSlice.from_record(record)
    if suggestion is None:
        return gap_slice(reference, mask, "the round suggested no slice", axis)
    if suggestion.index >= np.shape(mask)[suggestion.axis]:
        return gap_slice(reference, mask, f"the suggested {suggestion.describe()} is outside the volume", axis)
    if whole_slices(mask, suggestion.axis)[suggestion.index]:
        return gap_slice(reference, mask, f"the suggested {suggestion.describe()} is painted already", axis)
    return NextSlice(suggestion.axis, suggestion.index, "suggested")


def choose_next(rule: str, label: np.ndarray, record: dict, reference: np.ndarray, mask: np.ndarray,
                axis: int = 0) -> NextSlice:
    """The next slice under ``rule`` (``suggested``, ``worst`` or ``gap``) given the current result and its round
    record; ``axis`` is the one the user paints along (the suggestion may name another)."""
    if rule == "suggested":
        return suggested_slice(record, reference, mask, axis)
    if rule == "worst":
        return worst_slice(label, reference, mask, axis)
    if rule == "gap":
        return gap_slice(reference, mask, axis=axis)
    raise SparseSegError(f"unknown rule for the next slice {rule!r}", f"Use one of {', '.join(RULES)}.")
