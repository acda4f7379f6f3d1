"""Fusing the two branches' pseudo-labels into training targets for the final network (paper Eqs. 4-7).

Per voxel of an unlabelled slice, with ``s`` the semi-supervised branch's label and ``r`` the registration's:

* certain = both agree (``s == r``, object or background): the paper's consistent labels (Eq. 4), together with
  the ground truth of the labelled slices (Eq. 6);
* uncertain = either says object minus certain (Eq. 5): labelled as the object one branch saw, and weighted
  ``beta`` in the loss (Eq. 7) by the final network's training.

The three rules of the paper's Set 4: ``weighted`` (the proposed one, above), ``intersection`` (uncertain voxels
become background: object only where both see it) and ``union`` (uncertain voxels become object at full weight).
Several foreground classes: two different object classes count as uncertain, labelled with the semi branch's.
"""

from __future__ import annotations

import numpy as np

from ...engine.sampling import UNKNOWN

#: ``kind`` values: the loss a voxel's target enters (0: none, ground truth outside the volume or unknown).
#: ``OBJECT_ONLY``: a certain pseudo-label that teaches object against background, not which object class.
CERTAIN, UNCERTAIN, OBJECT_ONLY = 1.0, 2.0, 3.0


def certain_uncertain(semi: np.ndarray, registration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (certain, uncertain): agreement, and object for either branch without agreement."""
    certain = semi == registration
    uncertain = ~certain & ((semi > 0) | (registration > 0))
    return certain, uncertain


def fuse_labels(semi: np.ndarray, registration: np.ndarray, labelled: np.ndarray, ground_truth: np.ndarray,
                rule: str = "weighted") -> tuple[np.ndarray, np.ndarray]:
    """``(target, kind)`` for one volume: target class per voxel (``UNKNOWN`` nowhere here: every voxel is
    labelled by ground truth or a fusion), kind = :data:`CERTAIN` or :data:`UNCERTAIN` (the loss it enters).

    ``labelled`` marks ground-truth voxels, which keep ``ground_truth`` as certain targets under every rule.
    """
    certain, uncertain = certain_uncertain(semi, registration)
    object_label = np.where(semi > 0, semi, registration)
    target = np.where(certain, semi, 0).astype(np.int16)
    kind = np.full(semi.shape, CERTAIN, np.float32)
    if rule == "weighted":
        target[uncertain] = object_label[uncertain]
        kind[uncertain] = UNCERTAIN
    elif rule == "union":
        target[uncertain] = object_label[uncertain]
    elif rule != "intersection":
        raise ValueError(f"unknown fusion rule {rule!r}")
    target[labelled] = ground_truth[labelled]
    kind[labelled] = CERTAIN
    return target, kind


def single_branch_targets(labels: np.ndarray, labelled: np.ndarray, ground_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(target, kind)`` when only one branch runs (the paper's Semi-PL-Net / Self-PL-Net): its labels, all certain."""
    target = labels.astype(np.int16).copy()
    target[labelled] = ground_truth[labelled]
    return target, np.full(labels.shape, CERTAIN, np.float32)


def classes_from_ground_truth(kind: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """``kind`` with every certain voxel outside the ground truth as :data:`OBJECT_ONLY` (``pseudo_classes``)."""
    out = kind.copy()
    out[(kind == CERTAIN) & ~labelled] = OBJECT_ONLY
    return out


def fusion_counts(semi: np.ndarray, registration: np.ndarray, labelled: np.ndarray) -> dict[str, int]:
    """Voxels of the unlabelled slices per set (for the training record): certain object, uncertain."""
    certain, uncertain = certain_uncertain(semi, registration)
    free = ~labelled
    return {"certain_object": int((certain & (semi > 0) & free).sum()), "uncertain": int((uncertain & free).sum())}


__all__ = ["CERTAIN", "OBJECT_ONLY", "UNCERTAIN", "UNKNOWN", "certain_uncertain", "classes_from_ground_truth", "fuse_labels",
           "fusion_counts", "single_branch_targets"]
