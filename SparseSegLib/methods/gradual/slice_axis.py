"""The axis the user painted along, and the 2D network's frame across it.

The slice-stack form grows the labelled block slice by slice and trains a 2D network on slices; both must
follow the axis the annotation was painted along, or a slice painted across array axis 1 or 2 is never
propagated (each axis-0 slice then holds one painted line, and growing along axis 0 adds nothing new).
The cases stay on their own grid: the 2D network is told its slice axis (``NetworkConfig.axes``, which
:func:`~SparseSegLib.engine.inference.predict_probabilities` honours) and only the training sampler sees the
volumes with that axis moved to the front, so pseudo-labels, results and a saved model need no transposing.
"""

from __future__ import annotations


import numpy as np

from ...case import Case
from ...engine.axis_ensemble import to_axis
from ...engine.sampling import TrainingVolume
from ...errors import SparseSegError
from ...jobs.regions import whole_slice_axis
from .regions import Box


def painted_axis(cases: list[Case]) -> int:
    """The array axis the cases' annotations are whole slices across; 0 for boxes (no slice axis).

    One network serves every case, so cases painted across different axes are refused rather than guessed.
    """
    axes = {}
    for case in cases:
        if case.annotated is None:
            continue
        axis = whole_slice_axis(case.annotated)
        if axis is not None:
            axes.setdefault(axis, []).append(case.case_id)
    if len(axes) > 1:
        listed = "; ".join(f"axis {a}: {', '.join(ids[:3])}" for a, ids in sorted(axes.items()))
        raise SparseSegError(f"gradual learning: the cases are painted across different array axes ({listed})",
                             "Paint every case's slices across the same axis, or train them separately.")
    return next(iter(axes), 0)


def moved_volume(volume: TrainingVolume, axis: int) -> TrainingVolume:
    """``volume`` with array ``axis`` first (contiguous, so the sampler's crops stay cheap)."""
    if axis == 0:
        return volume
    move = lambda array: None if array is None else np.ascontiguousarray(to_axis(array, axis))  # noqa: E731
    return TrainingVolume(move(volume.image), move(volume.target), move(volume.weight))


def moved_box(box: Box, axis: int) -> Box:
    """A ``(low, high)`` box in the frame of :func:`moved_volume` (``to_axis`` keeps the other axes' order)."""
    order = (axis,) + tuple(a for a in range(3) if a != axis)
    return tuple(box[0][a] for a in order), tuple(box[1][a] for a in order)
