"""Several 2D networks, each running across a different array axis, fused by averaging their softmax.

A 2D network trained on slices across one axis sees a structure in one set of cross-sections only;
networks across the other two axes see it lengthwise, and their errors are largely independent. The
ensemble is one ``nn.Module`` (so a model folder stores it as one state dict) whose members are applied
by :func:`~.inference.predict_probabilities`: member ``n`` gets the volume with axis ``axes[n]`` moved
to the front, and its probabilities are moved back before averaging.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def to_axis(array: np.ndarray, axis: int, leading: int = 0) -> np.ndarray:
    """``array`` with spatial axis ``axis`` moved to the front (after ``leading`` non-spatial axes)."""
    return np.moveaxis(array, leading + axis, leading) if axis else array


def from_axis(array: np.ndarray, axis: int, leading: int = 0) -> np.ndarray:
    """Undo :func:`to_axis`."""
    return np.moveaxis(array, leading, leading + axis) if axis else array


def scan_axes(frame_axes: list[int] | tuple[int, ...], painted_axis: int) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """For networks trained across ``frame_axes`` of a volume whose axis ``painted_axis`` was moved to the front
    (``np.moveaxis(a, painted_axis, 0)``): the scan's own array axis each runs across, and whether its two in-plane
    axes are the other way round from the order :func:`to_axis` gives on the scan (``swap_in_plane``)."""
    order = [painted_axis] + [a for a in range(3) if a != painted_axis]  # frame axis -> the scan's own array axis
    axes, swap = [], []
    for frame_axis in frame_axes:
        axis = order[frame_axis]
        axes.append(axis)
        swap.append([order[b] for b in range(3) if b != frame_axis] != [c for c in range(3) if c != axis])
    return tuple(axes), tuple(swap)


class AxisEnsemble(nn.Module):
    """``members[n]`` segments slices across array axis ``axes[n]`` (an axis may repeat: members of several
    independently trained runs); see the module doc."""

    def __init__(self, members: list[nn.Module], axes: tuple[int, ...]) -> None:
        super().__init__()
        if len(members) != len(axes):
            raise ValueError(f"one member per axis entry is needed, got {len(members)} members for axes {axes}")
        self.members = nn.ModuleList(members)
        self.axes = tuple(int(a) for a in axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("an axis ensemble segments whole volumes: use engine.inference.predict_probabilities")
