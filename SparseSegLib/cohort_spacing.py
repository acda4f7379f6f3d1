"""A cohort's scans brought to one in-plane voxel spacing before a method trains on them.

A network learns sizes in pixels. A cohort gathered from several scanners holds the same anatomy at several
in-plane spacings (0.6-1.0 mm is common for CT and MRI), and a 2D network trained on them as they are must learn
every structure at several sizes at once. As nnU-Net does, the training scans are resampled in plane to the
cohort's median in-plane spacing when any of them lies more than 10% from it; the model then records that
spacing, and a scan to segment is moved to it and its result moved back (:mod:`.engine.spacing`).

Only the two in-plane axes (j, i) move. The slice axis k stays as it is, so an annotated slice stays exactly
one slice and no sparse annotation is smeared over its neighbours or lost between them. Images are resampled
linearly, labels and the annotated mask by nearest neighbour.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .case import Case, Geometry
from .engine.spacing import SPACING_TOLERANCE, resample, resampled_shape


def common_in_plane_spacing(cases: list[Case], tolerance: float = SPACING_TOLERANCE) -> tuple[float, float] | None:
    """The cohort's median in-plane spacing ``(j, i)`` in mm when some scan lies more than ``tolerance``
    (relative) from it on either in-plane axis; None when they all lie within it (nothing to move)."""
    if not cases:
        return None
    table = np.array([case.geometry.spacing_kji[1:] for case in cases], dtype=float)
    median = np.median(table, 0)
    if np.all(np.abs(table / median - 1.0) <= tolerance):
        return None
    return float(median[0]), float(median[1])


def resampled_in_plane(case: Case, spacing_ji: tuple[float, float]) -> Case:
    """``case`` on a grid of ``spacing_ji`` in plane (k unchanged), covering the same extent from the same first
    voxel centre, with the same direction."""
    old = case.geometry.spacing_kji
    new = (old[0], float(spacing_ji[0]), float(spacing_ji[1]))
    shape = resampled_shape(case.image.shape, old, new)

    def moved(array: np.ndarray | None, nearest: bool, dtype) -> np.ndarray | None:
        if array is None:
            return None
        return resample(array.astype(np.float32), old, new, shape, nearest=nearest).astype(dtype)

    geometry = Geometry(size=(shape[2], shape[1], shape[0]), spacing=(new[2], new[1], new[0]),
                        origin=case.geometry.origin, direction=case.geometry.direction)
    return replace(case, image=moved(case.image, False, np.float32), geometry=geometry,
                   label=moved(case.label, True, case.label.dtype if case.label is not None else np.uint8),
                   annotated=moved(case.annotated, True, bool))


def at_common_spacing(cases: list[Case], log=None, target: tuple[float, float] | None = None) -> list[Case]:
    """``cases`` as a method should train on them: each moved to ``target`` in plane (default: the cohort's own
    :func:`common_in_plane_spacing`; unchanged when that is None). Validation scans take the training scans'
    target. ``log``: a callable told what was done."""
    target = target or common_in_plane_spacing(cases)
    if target is None:
        return cases
    moved = [case if np.allclose(case.geometry.spacing_kji[1:], target, rtol=1e-4) else resampled_in_plane(case, target)
             for case in cases]
    if log is not None:
        count = sum(a is not b for a, b in zip(cases, moved))
        log(f"{count} of {len(cases)} scans resampled in plane to {target[1]:g} x {target[0]:g} mm (i x j), the "
            "training scans' median in-plane spacing, for training; the slice axis is kept")
    return moved
