"""One round's training targets: ground truth, plus the network's pseudo-labels where they can be trusted.

A hard argmax over the whole grown slab makes every far false positive a training target, which the next
round learns and spreads (the flooding of issue 19). Two filters, both on by default, keep that out:

* **confidence gate**: a voxel whose top class probability is below ``confidence`` stays unknown (it
  reaches no loss this round; a later round may label it);
* **anchor at the paint**: only 3D connected components of the target foreground that touch painted
  foreground are kept (:func:`~SparseSegLib.methods.propagate.fusion.anchor_at_paint`); the foreground of
  any other component becomes unknown, not background, since a second part of the object the user did not
  paint is possible and teaching it as background would be worse than not teaching it.

Ground truth (painted foreground and the painted slices' background, which are the negatives the network
learns first) is written last and is never overwritten or filtered.
"""

from __future__ import annotations

import numpy as np

from ...engine.sampling import UNKNOWN
from ..propagate.fusion import anchor_at_paint


def pseudo_label_target(probabilities: np.ndarray, base: np.ndarray, ground_truth: np.ndarray, annotated: np.ndarray,
                        to_predict: np.ndarray, confidence: float | None = None,
                        anchor: bool = True) -> tuple[np.ndarray, dict[str, int]]:
    """The next training target and what the filters did.

    ``probabilities`` ``(C, k, j, i)``: the network's softmax; ``base``: the target the predictions are written
    into (the ground truth, or the previous targets when earlier pseudo-labels are frozen); ``ground_truth``:
    the sparse label map (meaningful where ``annotated``); ``to_predict``: voxels that take the network's label
    (annotated voxels never do). Returns the target (``UNKNOWN`` where not labelled) and counts:
    ``pseudo_labelled`` (labelled voxels outside the annotation), ``predicted`` (voxels that took a
    prediction), ``unconfident`` (left unknown by the gate), ``unanchored`` (foreground dropped by the anchor).
    """
    annotated = np.asarray(annotated, bool)
    predict = np.asarray(to_predict, bool) & ~annotated
    target = np.array(base, dtype=np.int16, copy=True)
    labels = probabilities.argmax(0).astype(np.int16)
    unconfident = 0
    if confidence is not None:
        confident = probabilities.max(0) >= confidence
        unconfident = int(np.count_nonzero(predict & ~confident))
        predict &= confident
    target[predict] = labels[predict]
    target[annotated] = ground_truth[annotated]  # ground truth is never overwritten
    unanchored = 0
    if anchor:
        painted_foreground = annotated & (ground_truth > 0)
        kept = anchor_at_paint(np.where(target > 0, target, 0), painted_foreground) > 0
        detached = (target > 0) & ~kept & ~annotated  # hole filling of the anchor is not taken: only removals
        unanchored = int(np.count_nonzero(detached))
        target[detached] = UNKNOWN
    return target, {"pseudo_labelled": int(np.count_nonzero((target >= 0) & ~annotated)),
                    "predicted": int(np.count_nonzero(predict)), "unconfident": unconfident, "unanchored": unanchored}
