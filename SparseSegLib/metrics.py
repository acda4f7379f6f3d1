"""Segmentation metrics, with the edge cases decided once so every benchmark scores alike.

Why this module exists: sparse-annotation papers report a mix of overlap (Dice, IoU), surface
distance (HD95, ASSD) and volume (RAVD) scores, and the numbers are only comparable when every run
computes them the same way: distances in millimetres from the scan's real (often anisotropic)
spacing, empty masks handled by a fixed rule rather than by whatever a library happens to return,
and multi-class structures scored per class, merged, and averaged. MONAI's metric functions do the
standard computations; this module feeds them correctly shaped tensors, passes the spacing, silences
their empty-mask warnings and replaces their ``nan``/``inf`` for empty masks with the conventions
below. Boundary IoU, which MONAI lacks, is computed here with scipy distance transforms.

Conventions: masks and label maps are numpy arrays in ``(k, j, i)`` order (see :mod:`.case`);
``spacing`` is in the same array-axis order, ``Geometry.spacing_kji``, in mm.

Empty masks (``P`` = prediction, ``R`` = reference), as returned by :func:`binary_metrics`:

============ ============= ================= =================
metric       both empty    only ``P`` empty  only ``R`` empty
============ ============= ================= =================
dice, iou    1             0                 0
boundary_iou 1             0                 0
hd95, assd   0 mm          nan (no surface)  nan (no surface)
ravd         0             -1 (computed)     nan (divides by 0)
tpr          1 (vacuous)   0 (computed)      1 (vacuous)
tnr          computed      computed          computed
============ ============= ================= =================

TPR only asks whether the reference's positives were found: with none to find, nothing was missed
and it is 1 whatever the prediction does (false positives are what Dice, IoU, TNR and RAVD punish).
TNR is likewise 1 in the (unrealistic) case of a reference with no negatives at all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from .errors import SparseSegError

if TYPE_CHECKING:
    import torch

#: The metrics :func:`binary_metrics` returns, in reporting order.
METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "hd95", "assd", "ravd", "tpr", "tnr", "boundary_iou")

#: Unit of each metric ("" = dimensionless).
METRIC_UNITS: dict[str, str] = {name: ("mm" if name in ("hd95", "assd") else "") for name in METRIC_NAMES}

#: True when larger is better, False when smaller is better, None for RAVD (signed: 0 is best, the
#: magnitude says how far off the volume is, the sign whether it is over- or under-segmented).
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "dice": True,
    "iou": True,
    "hd95": False,
    "assd": False,
    "ravd": None,
    "tpr": True,
    "tnr": True,
    "boundary_iou": True,
}

#: Column titles for tables.
DISPLAY_NAMES: dict[str, str] = {
    "dice": "Dice",
    "iou": "IoU",
    "hd95": "HD95",
    "assd": "ASSD",
    "ravd": "RAVD",
    "tpr": "TPR",
    "tnr": "TNR",
    "boundary_iou": "Boundary IoU",
}

#: Default band width of Boundary IoU in mm.
DEFAULT_BOUNDARY_MM = 2.0

#: Group keys :func:`case_metrics` adds next to the class names.
MERGED = "merged"
MEAN = "mean"

Spacing = Sequence[float]


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Spacing,
    boundary_mm: float = DEFAULT_BOUNDARY_MM,
) -> dict[str, float]:
    """All :data:`METRIC_NAMES` for two 3D boolean masks on the same grid.

    ``spacing`` is ``(sk, sj, si)`` in mm, so HD95 and ASSD come out in mm. RAVD is *signed*:
    ``(|P| - |R|) / |R|``, positive when the prediction is too large. Surfaces (HD95/ASSD) are MONAI's:
    the voxels a 6-connected erosion removes (the array edge counts as outside), distances measured
    between voxel centres; HD95 is the larger of the two directed 95th percentiles, ASSD the mean of
    both directions' distances pooled. Empty masks follow the table in the module docstring.
    """
    pred_mask, ref_mask = _check_pair(pred, ref)
    spacing_t = _check_spacing(spacing)
    n_pred, n_ref = int(pred_mask.sum()), int(ref_mask.sum())

    # Imported here: MONAI takes seconds to import and most of the package never scores anything.
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_confusion_matrix_metric,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        get_confusion_matrix,
    )

    # MONAI wants binarised one-hot tensors (batch, channel, *spatial); our one channel is the
    # foreground, so include_background=True keeps it.
    y_pred = torch.from_numpy(pred_mask[None, None].astype(np.float32))
    y = torch.from_numpy(ref_mask[None, None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is all 0")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai")
        # ignore_empty=False gives MONAI's 1 (both empty) / 0 (reference empty) - our convention.
        dice = _item(compute_dice(y_pred, y, include_background=True, ignore_empty=False))
        iou = _item(compute_iou(y_pred, y, include_background=True, ignore_empty=False))
        confusion = get_confusion_matrix(y_pred, y, include_background=True)
        tpr = _item(compute_confusion_matrix_metric("sensitivity", confusion))
        tnr = _item(compute_confusion_matrix_metric("specificity", confusion))
        if n_pred and n_ref:
            hd95 = _item(
                compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing_t)
            )
            assd = _item(
                compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=spacing_t)
            )
        else:
            hd95 = assd = 0.0 if n_pred == n_ref else math.nan

    if n_ref == 0:
        tpr = 1.0  # vacuous: no reference positives to find
    if n_ref == ref_mask.size:
        tnr = 1.0  # vacuous: no reference negatives to keep
    ravd = (n_pred - n_ref) / n_ref if n_ref else (0.0 if n_pred == 0 else math.nan)

    return {
        "dice": dice,
        "iou": iou,
        "hd95": hd95,
        "assd": assd,
        "ravd": float(ravd),
        "tpr": tpr,
        "tnr": tnr,
        "boundary_iou": boundary_iou(pred_mask, ref_mask, spacing_t, boundary_mm),
    }


def boundary_region(mask: np.ndarray, spacing: Spacing, boundary_mm: float = DEFAULT_BOUNDARY_MM) -> np.ndarray:
    """The voxels of ``mask`` within ``boundary_mm`` of its contour (the band Boundary IoU compares).

    Distance is the Euclidean distance in mm from a voxel's centre to the nearest voxel outside the
    mask (the array edge counts as outside, as for MONAI's surfaces). The contour voxels themselves
    (those a 6-connected erosion removes) are always kept, so a band narrower than a voxel still has
    one voxel's thickness.
    """
    mask = np.asarray(mask, dtype=bool)
    spacing_t = _check_spacing(spacing)
    region = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return region
    box = _bounding_box(mask)
    padded = np.pad(mask[box], 1)  # zeros all round: array edge and empty surroundings are outside
    distance = ndimage.distance_transform_edt(padded, sampling=spacing_t)
    contour = padded & ~ndimage.binary_erosion(padded)
    band = contour | (padded & (distance <= boundary_mm + 1e-6))
    region[box] = band[1:-1, 1:-1, 1:-1]
    return region


def boundary_iou(
    pred: np.ndarray, ref: np.ndarray, spacing: Spacing, boundary_mm: float = DEFAULT_BOUNDARY_MM
) -> float:
    """Boundary IoU (Cheng et al., CVPR 2021): IoU of the contour bands of prediction and reference.

    ``|(P_d & P) & (R_d & R)| / |(P_d & P) | (R_d & R)|`` with ``X_d`` from :func:`boundary_region`.
    Unlike Dice it is not dominated by the interior of large structures. Both empty -> 1, one -> 0.
    """
    pred_mask, ref_mask = _check_pair(pred, ref)
    if not pred_mask.any() and not ref_mask.any():
        return 1.0
    box = _bounding_box(pred_mask | ref_mask)
    pred_band = boundary_region(pred_mask[box], spacing, boundary_mm)
    ref_band = boundary_region(ref_mask[box], spacing, boundary_mm)
    union = int(np.count_nonzero(pred_band | ref_band))
    return float(np.count_nonzero(pred_band & ref_band) / union) if union else 1.0


def mask_dice(pred: np.ndarray, ref: np.ndarray, empty: float | None = 1.0) -> float | None:
    """Dice of two boolean masks from voxel counts; ``empty`` (1, as :func:`binary_metrics`) when both are empty.

    The fast path for scores computed many times per run (validation every epoch, a test curve every round, the
    Gradual benchmark's tables): plain counts in float64, no MONAI tensors, no surface distances. Gives exactly
    ``2 |P & R| / (|P| + |R|)``; ``empty=None`` leaves a structure absent from both unscored.
    """
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    return empty if total == 0 else 2.0 * int(np.count_nonzero(np.logical_and(pred, ref))) / total


def mask_iou(pred: np.ndarray, ref: np.ndarray, empty: float = 1.0) -> float:
    """IoU of two boolean masks from voxel counts; ``empty`` (1) when both are empty (see :func:`mask_dice`)."""
    union = int(np.count_nonzero(np.logical_or(pred, ref)))
    return empty if union == 0 else int(np.count_nonzero(np.logical_and(pred, ref))) / union


def foreground_dices(pred: np.ndarray, ref: np.ndarray, num_classes: int, known: np.ndarray | None = None) -> list[float]:
    """Dice of each foreground class ``1 .. num_classes - 1`` of two label maps, on the ``known`` voxels only.

    For sparse labels (validation on annotated voxels): voxels outside ``known`` (all count when None) are left out,
    and a class absent from both maps is left out too rather than scored 1, so a mean over the list says how well
    the classes that are there were found.
    """
    if known is not None:
        pred, ref = pred[known], ref[known]
    scores = (mask_dice(pred == value, ref == value, empty=None) for value in range(1, num_classes))
    return [score for score in scores if score is not None]


def case_metrics(
    pred_label: np.ndarray,
    ref_label: np.ndarray,
    spacing: Spacing,
    class_names: Mapping[int, str],
    merged: bool = True,
    boundary_mm: float = DEFAULT_BOUNDARY_MM,
) -> dict[str, dict[str, float]]:
    """Metrics of one case: per class, ``"merged"`` and ``"mean"``.

    Keys, in order: each class name (``pred_label == value`` vs ``ref_label == value``, classes in
    ascending label value); ``"merged"`` when ``merged`` and there are at least two classes: all
    foreground as one structure (``pred_label > 0`` vs ``ref_label > 0``, how the incremental
    self-labelling paper scores the hippocampus); ``"mean"``: per metric, the mean over the class
    entries (not ``"merged"``), ignoring nan (nan only when every class is nan).
    """
    if not class_names:
        raise SparseSegError("No classes to score", "Give class_names, e.g. {1: 'Anterior', 2: 'Posterior'}.")
    reserved = {MERGED, MEAN} & set(class_names.values())
    if reserved:
        raise SparseSegError(
            f"Class name {sorted(reserved)[0]!r} clashes with a metrics group name",
            f"Rename the class: {MERGED!r} and {MEAN!r} are reserved.",
        )
    pred_label, ref_label = np.asarray(pred_label), np.asarray(ref_label)
    _check_shapes(pred_label, ref_label)

    result: dict[str, dict[str, float]] = {}
    for value in sorted(class_names):
        result[class_names[value]] = binary_metrics(pred_label == value, ref_label == value, spacing, boundary_mm)
    per_class = list(result.values())
    if merged and len(class_names) >= 2:
        result[MERGED] = binary_metrics(pred_label > 0, ref_label > 0, spacing, boundary_mm)
    result[MEAN] = {name: _nanmean([m[name] for m in per_class]) for name in METRIC_NAMES}
    return result


def summarize(per_case: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Statistics over cases for each group (class name / merged / mean) and metric.

    Each entry holds ``mean``, ``sd`` (sample SD, ``ddof=1``; 0 for one value), ``median`` over the
    finite values, ``n`` (how many were finite) and ``n_nan`` (how many were not, e.g. HD95 of an
    empty prediction). With no finite value, mean, sd and median are nan. A group missing from a
    case is simply not counted.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for case in per_case:
        for group, metrics in case.items():
            for name, value in metrics.items():
                values.setdefault(group, {}).setdefault(name, []).append(float(value))

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for group, metrics in values.items():
        summary[group] = {}
        for name, raw in metrics.items():
            array = np.asarray(raw, dtype=float)
            finite = array[np.isfinite(array)]
            n = int(finite.size)
            summary[group][name] = {
                "mean": float(finite.mean()) if n else math.nan,
                "sd": float(finite.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan),
                "median": float(np.median(finite)) if n else math.nan,
                "n": n,
                "n_nan": int(array.size - n),
            }
    return summary


def format_table(
    per_case: Mapping[str, Mapping[str, Mapping[str, float]]],
    group: str = MEAN,
    metrics: Sequence[str] = METRIC_NAMES,
) -> str:
    """A markdown table of one group's metrics: a row per case, then a ``mean ± sd`` row.

    ``per_case`` maps case ids to :func:`case_metrics` results. Distances (mm) get 2 decimals, the
    rest 3; nan (and a case without ``group``) shows as ``n/a``. Units go in the header.
    """
    header = ["Case"] + [_column_title(name) for name in metrics]
    rows = [header, ["---"] + ["---:"] * len(metrics)]
    for case_id, groups in per_case.items():
        scores = groups.get(group, {})
        rows.append([str(case_id)] + [_format_value(name, scores.get(name, math.nan)) for name in metrics])
    stats = summarize([groups for groups in per_case.values() if group in groups]).get(group, {})
    last = ["mean ± sd"]
    for name in metrics:
        entry = stats.get(name)
        if entry is None or entry["n"] == 0:
            last.append("n/a")
        else:
            last.append(f"{_format_value(name, entry['mean'])} ± {_format_value(name, entry['sd'])}")
    rows.append(last)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _column_title(name: str) -> str:
    unit = METRIC_UNITS.get(name, "")
    title = DISPLAY_NAMES.get(name, name)
    return f"{title} ({unit})" if unit else title


def _format_value(name: str, value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    decimals = 2 if METRIC_UNITS.get(name) == "mm" else 3
    return f"{value:.{decimals}f}"


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _item(tensor: torch.Tensor) -> float:
    """The single value of a MONAI (batch=1, channel=1) result."""
    return float(tensor.reshape(-1)[0])


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel (``mask`` must not be empty)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as boolean masks, after checking they are 3D and on the same grid."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    _check_shapes(pred, ref)
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False)


def _check_shapes(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.ndim != 3 or pred.shape != ref.shape:
        raise SparseSegError(
            f"Cannot compare a prediction of shape {pred.shape} with a reference of shape {ref.shape}",
            "Both must be 3D arrays on the same voxel grid (resample the prediction to the reference).",
        )


def _check_spacing(spacing: Spacing) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise SparseSegError(
            f"Invalid voxel spacing {spacing!r}",
            "Give three positive spacings in mm in array-axis order (Geometry.spacing_kji).",
        )
    return values  # type: ignore[return-value]
