"""Annotate next: the slice a round's result is least sure of, for the user to paint next.

After every round the worker scores each slice along the job's slice axis (the axis the user paints on)
and names the least certain one in ``round.json`` and the ``round`` event::

    "suggested_slice": {"axis": 0, "index": 14, "score": 212.4, "ijk": [31, 22, 14]}

``axis`` is an array axis in ``(k, j, i)`` order (0 = k), ``index`` the slice along it, ``ijk`` a voxel
``(i, j, k)`` of that slice at the centre of its uncertainty (where a slice view should be centred), and
``score`` the slice's summed uncertainty, in voxels.

Why this score. The user paints one *whole* slice next, so the slice is worth most where the most voxels
would be corrected: the score is the *sum*, not the mean, of the voxels' normalised entropy (0 = certain,
1 = every class equally likely), so a slice with a long uncertain boundary beats one with a few very
uncertain voxels. Only voxels near the object count: those within :data:`NEAR_OBJECT_VOXELS` voxels
(in 3D, so the slices just past the predicted object's end are included) of the predicted foreground.
Without that restriction the faint entropy of a confident background (0.08 at p = 0.99) summed over a
240 x 240 slice outweighs any boundary. Doubt far from the predicted object counts only when the result has
no object at all (then voxels at least :data:`UNCERTAIN` unsure): a mean teacher's dropout passes are unsure
over 7-47 % of each slice of a one-scan job, most at the volume's first and last slices, and
counting that doubt everywhere sent 4 of 5 first suggestions on the hippocampus dev scans to slices with no
object (thirty-fourth session, docs/results/interactive.md).
Annotated voxels are ground truth and never count, and a slice annotated as a whole is never suggested.

A method that knows better may say so itself: ``RoundResult.metrics["suggested_slice"]`` (a slice index
along the job's axis, or a dict like the one above) is honoured as given.

Only numpy is imported at module level (scipy when scoring), so the Slicer process can read suggestions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .regions import AXIS_NAMES, resolve_slice_axis

#: ``round.json`` / ``round`` event key, and the :class:`RoundResult.metrics` key a method may set.
SUGGESTION_KEY = "suggested_slice"
#: Voxels (Chebyshev distance, in 3D) around the predicted foreground whose uncertainty counts.
NEAR_OBJECT_VOXELS = 3
#: Normalised entropy from which a voxel counts wherever it lies when nothing is predicted (a two-class p of about
#: 0.89 or less).
UNCERTAIN = 0.5


def normalized_entropy(probabilities, slab: int = 16) -> np.ndarray:
    """Voxel-wise entropy of class probabilities ``(C, k, j, i)`` divided by ``log C`` (0 = certain, 1 = uniform).

    Computed ``slab`` slices along k at a time: on the whole grid its temporaries (the clipped copy, its log, their
    product, per class) held 2 GiB for a two-class 512 x 512 x 300 scan, the worker's peak memory."""
    probabilities = np.asarray(probabilities)
    scale = np.log(max(probabilities.shape[0], 2))
    result = np.empty(probabilities.shape[1:], np.float32)
    for start in range(0, probabilities.shape[1], max(1, int(slab))):
        p = np.clip(probabilities[:, start:start + slab].astype(np.float32, copy=False), 1e-7, 1.0)
        result[start:start + slab] = -(p * np.log(p)).sum(axis=0) / scale
    return result


def suggestion_axis(region: dict, label: np.ndarray, annotated: np.ndarray) -> int | None:
    """The axis a job's suggestion is along: the one the user paints on.

    ``slices``: the region's axis (``auto`` resolved as the annotated mask resolves it); ``boxes``: axis 0
    (k, the slice stack); ``mask`` (e.g. a Continue stage): the axis along which the mask holds the most
    whole annotated slices (axis 0 when it holds none); ``full``: None, nothing is left to annotate.
    """
    kind = region.get("kind")
    if kind == "slices":
        return resolve_slice_axis(label, region.get("axis", "auto"))
    if kind == "full":
        return None
    if kind == "mask":
        annotated = np.asarray(annotated, bool)
        whole = [int(np.all(annotated, axis=tuple(a for a in range(3) if a != axis)).sum()) for axis in range(3)]
        return int(np.argmax(whole)) if max(whole) > 0 else 0
    return 0


def near_object(label: np.ndarray, uncertainty: np.ndarray, radius: int = NEAR_OBJECT_VOXELS,
                uncertain: float = UNCERTAIN) -> np.ndarray:
    """Where a voxel's uncertainty counts: within ``radius`` voxels of the predicted foreground (a box
    neighbourhood, dilated only inside the foreground's bounding box, so a small object on a large scan
    costs little); with no predicted foreground, where it is at least ``uncertain`` unsure."""
    from scipy import ndimage

    foreground = np.asarray(label) > 0
    if not foreground.any():
        return np.asarray(uncertainty) >= uncertain
    region = np.zeros(foreground.shape, bool)
    if radius > 0:
        corners = np.argwhere(foreground)
        low = np.maximum(corners.min(axis=0) - radius, 0)
        high = np.minimum(corners.max(axis=0) + radius + 1, foreground.shape)
        crop = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
        dilated = ndimage.maximum_filter(foreground[crop].astype(np.uint8), size=2 * radius + 1, mode="constant")
        region[crop] |= dilated.astype(bool)
    else:
        region |= foreground
    return region


def slice_weights(uncertainty: np.ndarray, label: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """Each voxel's share of its slice's score: its uncertainty when it is unannotated and near the object
    (see module doc), else 0."""
    uncertainty = np.asarray(uncertainty, dtype=np.float32)
    annotated = np.asarray(annotated, bool)
    if uncertainty.shape != annotated.shape or np.shape(label) != annotated.shape:
        raise ValueError(f"uncertainty {uncertainty.shape}, label {np.shape(label)} and annotated mask "
                         f"{annotated.shape} must share one grid")
    return np.where(near_object(label, uncertainty) & ~annotated, uncertainty, np.float32(0))


def slice_scores(uncertainty: np.ndarray, label: np.ndarray, annotated: np.ndarray, axis: int,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Per slice along ``axis``: the summed uncertainty of its unannotated voxels near the object (see
    module doc); ``nan`` for a slice annotated as a whole."""
    weights = slice_weights(uncertainty, label, annotated) if weights is None else weights
    others = tuple(a for a in range(3) if a != axis)
    scores = weights.sum(axis=others, dtype=np.float64)
    scores[np.all(np.asarray(annotated, bool), axis=others)] = np.nan
    return scores


def suggest_slice(uncertainty: np.ndarray, label: np.ndarray, annotated: np.ndarray, axis: int) -> dict | None:
    """The least certain slice along ``axis`` as a ``round.json`` entry (see module doc), or None when no
    unannotated slice holds any uncertainty near the object (nothing worth painting next)."""
    weights = slice_weights(uncertainty, label, annotated)
    scores = slice_scores(uncertainty, label, annotated, axis, weights)
    if not np.any(np.nan_to_num(scores) > 0):
        return None
    index = int(np.nanargmax(scores))
    return {"axis": int(axis), "index": index, "score": round(float(scores[index]), 3),
            "ijk": _weighted_centre(np.take(weights, index, axis=axis), axis, index)}


def _weighted_centre(weights: np.ndarray, axis: int, index: int) -> list[int]:
    """The voxel ``(i, j, k)`` at the weighted centre of a slice's 2D ``weights`` (slice ``index`` along ``axis``)."""
    total = float(weights.sum(dtype=np.float64))
    centre = [int(round(float((grid * weights).sum(dtype=np.float64)) / total)) for grid in np.indices(weights.shape)]
    kji = centre[:axis] + [index] + centre[axis:]
    return [kji[2], kji[1], kji[0]]


def method_suggestion(value, axis: int | None, shape: tuple[int, int, int]) -> dict | None:
    """A method's own ``metrics["suggested_slice"]`` (an index along ``axis``, or a dict with ``index`` and
    optionally ``axis``, ``score``, ``ijk``) as a ``round.json`` entry; None when it is not a slice of the
    volume (the worker then computes its own and says why in a warning)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = {"index": int(value)}
    if not isinstance(value, dict) or isinstance(value.get("index"), bool):
        return None
    chosen = value.get("axis", axis if axis is not None else 0)
    if chosen not in (0, 1, 2) or not isinstance(value.get("index"), (int, np.integer)):
        return None
    if not 0 <= int(value["index"]) < shape[int(chosen)]:
        return None
    entry = {"axis": int(chosen), "index": int(value["index"])}
    if isinstance(value.get("score"), (int, float)) and not isinstance(value.get("score"), bool):
        entry["score"] = float(value["score"])
    ijk = value.get("ijk")
    if isinstance(ijk, (list, tuple)) and len(ijk) == 3 and all(isinstance(v, (int, np.integer)) for v in ijk):
        entry["ijk"] = [int(v) for v in ijk]
    return entry


@dataclass(frozen=True)
class SuggestedSlice:
    """A round's suggestion as the Slicer session reads it back from ``round.json``."""

    axis: int
    index: int
    score: float | None = None
    ijk: tuple[int, int, int] | None = None
    round: int | None = None

    @classmethod
    def from_record(cls, record: dict) -> SuggestedSlice | None:
        """The suggestion of a ``round.json`` record, or None when it has none (or a malformed one)."""
        entry = record.get(SUGGESTION_KEY) if isinstance(record, dict) else None
        if not isinstance(entry, dict):
            return None
        axis, index = entry.get("axis"), entry.get("index")
        if axis not in (0, 1, 2) or isinstance(index, bool) or not isinstance(index, int) or index < 0:
            return None
        score = entry.get("score")
        ijk = entry.get("ijk")
        return cls(int(axis), int(index), float(score) if isinstance(score, (int, float)) else None,
                   tuple(int(v) for v in ijk) if isinstance(ijk, list) and len(ijk) == 3 else None,
                   record.get("round") if isinstance(record.get("round"), int) else None)

    def describe(self) -> str:
        """``slice 14 along k`` (array axes named as the job's region names them)."""
        return f"slice {self.index} along {AXIS_NAMES[self.axis]}"
