"""``final_axes``: the final network as one 2D network per slice axis, their softmax averaged.

The paper's final network segments the slices across the labelled axis only, each on its own, so nothing ties one
slice's contour to the next: the result is ragged along that axis and runs on past the object's ends where a slice
looks alike. Once the fusion has labelled every voxel, a 2D network across either other axis sees the object in
profile, ends included, with full in-plane targets; :class:`~SparseSegLib.engine.axis_ensemble.AxisEnsemble`
averages the members over a new volume (the single-scan default and the self-labelling chain do the same with their
own networks). Each member trains for the final network's full budget, so the stage costs that many times as long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from ...case import Case
from ...engine.axis_ensemble import AxisEnsemble, to_axis
from ...engine.model import Segmenter
from ...engine.networks import NetworkConfig
from ...engine.sampling import TrainingVolume
from ..base import MethodOptions, PartReporter, Reporter
from ..common import across_axis, new_segmenter
from .branches import final_network
from .settings import CollaborativeSettings


def moved_volume(volume: TrainingVolume, axis: int) -> TrainingVolume:
    """``volume`` with slices across ``axis`` (image, target and kinds moved alike)."""
    arrays = (volume.image, volume.target, volume.weight)
    return TrainingVolume(*(None if a is None else np.ascontiguousarray(to_axis(a, axis)) for a in arrays))


def collaborative_segmenter(cases: list[Case], options: MethodOptions, name: str,
                            settings: CollaborativeSettings) -> Segmenter:
    """An untrained 2D segmentation network of the method: the ``--network`` preset with ``settings.context``
    neighbouring slices on each side as input channels."""
    config = replace(NetworkConfig.preset(options.network), context_slices=settings.context)
    return new_segmenter(cases, options, name, network=config)


def member_segmenter(cases: list[Case], options: MethodOptions, name: str, axis: int,
                     settings: CollaborativeSettings) -> Segmenter:
    """An untrained final network across ``axis`` (:func:`~..common.across_axis`): its in-plane patch sized from the
    moved volumes (only axis 0 takes ``--patch-size``: another axis's slices have another shape). The image is
    normalised once as a whole before the axes move, in training and prediction alike, so every member keeps the
    segmenter's normalisation (no per-slice z-score along its own axis)."""
    segmenter = collaborative_segmenter(cases, options, name, settings)
    if axis == 0:
        return segmenter
    moved = across_axis(segmenter, axis, cases, replace(options, patch_size=None))
    return replace(moved, normalization=segmenter.normalization)


def train_final_across_axes(cases: list[Case], volumes: list[TrainingVolume], settings: CollaborativeSettings,
                            options: MethodOptions, name: str, device: torch.device, reporter: Reporter, stage: str,
                            should_stop: Callable[[], bool] | None = None,
                            first: Segmenter | None = None) -> tuple[Segmenter, dict]:
    """The final network(s) trained on ``volumes`` (fused targets of ``cases``, slices across axis 0): one per axis of
    ``settings.axes`` and seed of ``settings.final_seeds``; several come back as one segmenter holding their
    :class:`AxisEnsemble`. ``first``: the untrained network across axis 0 when the caller already made it (the
    method's, as before this option)."""
    members, records = [], {}
    axes = settings.member_axes
    for number, axis in enumerate(axes):
        run = number // len(settings.axes)  # 0 for the first seed: the same seeds as before final_seeds existed
        segmenter = first if axis == 0 and run == 0 and first is not None else \
            member_segmenter(cases, replace(options, seed=options.seed + 97 * axis + 1009 * run), name, axis, settings)
        key = str(axis) if run == 0 else f"{axis}/{run}"
        label = stage if len(axes) == 1 else f"{stage} (slices across axis {axis}" + (f", seed {run + 1})" if run else ")")
        records[key] = final_network(segmenter, [moved_volume(v, axis) for v in volumes], settings,
                                     replace(options, seed=options.seed + 1009 * run), device,
                                     PartReporter(reporter, number, len(axes)), label, should_stop)
        members.append(segmenter)
    if len(members) == 1:
        return members[0], records[str(axes[0])]
    config = replace(members[0].network_config, axes=axes, swap_in_plane=(),
                     class_members=settings.class_members(len(volumes), members[0].num_classes))
    ensemble = AxisEnsemble([member.network for member in members], axes)
    return replace(members[0], network=ensemble, network_config=config), {"axes": records}
