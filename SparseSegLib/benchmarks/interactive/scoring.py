"""Scores the interactive benchmark records: Dice, HD95 and RAVD from :mod:`SparseSegLib.metrics`, kept small.

The headline figure is the mean over the classes (:func:`~SparseSegLib.metrics.case_metrics`' ``"mean"``
group; for one class, that class), so a multi-class scan is not judged by its easiest class or by the union of
its classes. The merged foreground (all classes as one, how the hippocampus is often reported) and every class
are kept too. ``nan`` (a surface distance to an empty result) is stored as ``null``.
"""

from __future__ import annotations

import math

import numpy as np

from ...metrics import MEAN, MERGED, case_metrics

#: The figures kept per structure.
KEPT = ("dice", "hd95", "ravd")


def _clean(value: float) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def score(label: np.ndarray, reference: np.ndarray, spacing, class_names: dict[int, str]) -> dict:
    """``{"dice", "hd95", "ravd"}`` (class mean) plus ``"merged"`` (two classes or more) and ``"classes"``."""
    metrics = case_metrics(label, reference, spacing, class_names)
    result: dict = {name: _clean(metrics[MEAN][name]) for name in KEPT}
    if MERGED in metrics:
        result["merged"] = {name: _clean(metrics[MERGED][name]) for name in KEPT}
    result["classes"] = {class_names[value]: {name: _clean(metrics[class_names[value]][name]) for name in KEPT}
                         for value in sorted(class_names)}
    return result
