"""Which slices a user's edits of the result become at Continue: the slices the edits lie on, in whichever view
they were made (for methods that take any view), or across the job's one slice axis.

Why a module of its own: before, every slice across the job's axis that an edit touched became ground truth
whole, so one sagittal correction of an axially painted job turned every axial slice it crossed (the unreviewed
result on nearly all of each) into ground truth without a word.
"""

from __future__ import annotations

import numpy as np

from ..errors import SparseSegError
from ..jobs.continuation import ANY_VIEW_METHODS
from ..jobs.regions import AXIS_NAMES, correction_planes, painted_slices, single_view_axis
from .text import tr as _  # named _ so that Slicer's lupdate_preprocess extracts the calls


def corrected_planes(changed: np.ndarray, slice_axis: int | None, method: str) -> dict[int, list[int]]:
    """``{axis: slices}`` that hold every edited voxel of ``changed``.

    A method of :data:`~SparseSegLib.jobs.continuation.ANY_VIEW_METHODS`: the fewest slices along any axes
    (:func:`~SparseSegLib.jobs.regions.correction_planes`, the job's axis first where it ties). Another method:
    the slices across the job's axis (for ROI boxes, the axis the edits touch fewest slices of), unless the edits
    lie on fewer slices across another axis: an error saying where to correct instead."""
    changed = np.asarray(changed, dtype=bool)
    if method in ANY_VIEW_METHODS:
        return correction_planes(changed, prefer=slice_axis)
    counts = [len(painted_slices(changed.astype(np.uint8), a)) for a in range(3)]
    axis, fewest = single_view_axis(counts, slice_axis)
    if fewest is not None:
        raise SparseSegError(
            _("the edits lie on {few} slice(s) across axis {other} ({other_name}) but on {many} across the "
              "job's slice axis {axis} ({axis_name})").format(few=counts[fewest], other=fewest,
                                                             other_name=AXIS_NAMES[fewest], many=counts[axis],
                                                             axis=axis, axis_name=AXIS_NAMES[axis]),
            _("{method} takes corrections across axis {axis} only: correct whole slices in that view, or start "
              "again with propagate, which takes corrections in any view.").format(method=method, axis=axis))
    slices = painted_slices(changed.astype(np.uint8), axis)
    return {axis: slices} if slices else {}


def describe_planes(planes: dict[int, list[int]]) -> str:
    """``3 along axis 0 (k): 4, 9, 12; 1 along axis 2 (i): 30`` for the session's log line."""
    parts = []
    for axis, slices in sorted(planes.items()):
        shown = ", ".join(map(str, slices[:12])) + (", ..." if len(slices) > 12 else "")
        parts.append(_("{count} along axis {axis} ({name}): {slices}").format(count=len(slices), axis=axis,
                                                                            name=AXIS_NAMES[axis], slices=shown))
    return "; ".join(parts)
