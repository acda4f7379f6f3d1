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
