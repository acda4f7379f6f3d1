"""The network branch: a small 2.5D U-Net trained on one scan's painted slices and its nearby propagated labels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from ...engine.inference import predict_probabilities
from ...engine.networks import NetworkConfig, build_network
from ...engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ...engine.trainer import TrainConfig, seed_everything, train_network
from ..base import PartReporter, Reporter
from .network_grid import CoarseGrid
from .settings import PropagateSettings


def network_config(settings: PropagateSettings) -> NetworkConfig:
    """Four levels (a slice crop of a few hundred pixels needs no more) and one residual unit: trains in a minute."""
    return NetworkConfig(dims=2, channels=(16, 32, 64, 128), num_res_units=1, context_slices=settings.context_slices)


def patch_size(shape: tuple[int, int, int], settings: PropagateSettings) -> tuple[int, int]:
    """In-plane patch: the crop where it fits, else ``settings.patch``, in multiples of 8."""
    return tuple(min(settings.patch, int(np.ceil(n / 8) * 8)) for n in shape[1:])


def training_targets(label: np.ndarray, painted: list[int], registration: np.ndarray | None, distance: np.ndarray,
                     settings: PropagateSettings, annotated: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(target, weight)`` for the network.

    The annotated voxels (the painted slices, slices painted across another axis, ROI boxes' voxels; the painted
    slices when ``annotated`` is None) are ground truth at weight 1. Slices within
    ``pseudo_distance`` of the paint take the registration's labels, weighted by closeness (Gaussian in slice
    distance) and confidence (how far the most likely class stands above a uniform guess). Everywhere else the
    voxels far from the propagated object (``negative_margin`` pixels in-plane) are background at
    ``negative_weight``: what teaches a network that has seen one slice not to label other, similar tissue.
    ROI boxes (``distance`` None, ``registration`` their :func:`~.box_prior.box_prior`): no pseudo-labels, the far
    negatives only.
    """
    depth = label.shape[0]
    target = np.full(label.shape, UNKNOWN, np.int16)  # a class or UNKNOWN; int64 would be 4x the memory of a crop
    weight = np.zeros(label.shape, np.float32)
    if registration is not None:
        likely = registration.argmax(0)
        if distance is not None:
            classes = registration.shape[0]
            reach = max(1.0, settings.pseudo_distance * depth)
            confidence = np.clip((registration.max(0) - 1.0 / classes) / (1.0 - 1.0 / classes), 0.0, 1.0)
            near = distance <= reach
            target[near] = likely[near]
            closeness = np.exp(-((distance / reach) ** 2)).astype(np.float32)
            weight[near] = (closeness[:, None, None] * confidence)[near]
        if settings.negative_weight > 0:
            object_ = ndimage.binary_dilation(likely > 0, structure=np.ones((1, 3, 3), bool),
                                              iterations=max(1, settings.negative_margin))
            far = ~object_ & (target == UNKNOWN)
            target[far] = 0
            weight[far] = settings.negative_weight
    if annotated is not None:
        target[annotated] = label[annotated]
        weight[annotated] = 1.0
    else:
        target[painted] = label[painted]
        weight[painted] = 1.0
    return target, weight


def train_and_predict(volume: np.ndarray, target: np.ndarray, weight: np.ndarray, num_classes: int,
                      settings: PropagateSettings, seed: int, device: torch.device, reporter: Reporter, stage: str,
                      should_stop: Callable[[], bool] | None = None, initial: dict | None = None,
                      region: tuple[slice, ...] | None = None) -> tuple[np.ndarray, dict]:
    """Train the network (from ``initial`` weights when given) on all of ``volume`` and return its probabilities
    ``(C, k, j, i)`` over ``volume[region]`` (all of it when None) and its weights (CPU tensors)."""
    seed_everything(seed)
    config = network_config(settings)
    network = build_network(config, num_classes)
    if initial:
        network.load_state_dict(initial)
    patch = patch_size(volume.shape, settings)
    sampler = PatchSampler([TrainingVolume(volume, target, weight)], 2, patch, context_slices=config.context_slices,
                           augment=True, seed=seed)
    train = TrainConfig(iterations=settings.iterations, batch_size=settings.batch_size,
                        log_every=max(1, settings.iterations // 10))
    reporter.log(f"{stage}: {train.iterations} iterations, batch {train.batch_size}, patch {patch}, "
                 f"{sampler.labelled_voxels} labelled voxels, device {device.type}")
    train_network(network, sampler, train, device,
                  progress=lambda step, total, loss, sps: reporter.progress(stage, step, total, loss, sps),
                  should_stop=should_stop)
    probabilities = predict_probabilities(network, volume if region is None else volume[region], config, patch, device)
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    network.cpu()
    return probabilities, state


def train_across_axes(volume: np.ndarray, target: np.ndarray, weight: np.ndarray, num_classes: int,
                      settings: PropagateSettings, seed: int, device: torch.device, reporter: Reporter, stage: str,
                      should_stop: Callable[[], bool] | None = None, initial: dict | None = None,
                      region: tuple[slice, slice, slice] | None = None,
                      grid: CoarseGrid | None = None) -> tuple[np.ndarray, dict]:
    """One network per axis of ``settings.axes`` (slices across that axis), their probabilities over
    ``volume[region]`` (all of it when None) averaged.

    Across the painted slices (axis 0) a 2D network sees each slice on its own; across the other two it sees the
    object in profile, ends included, which is where a slice-by-slice chain cannot tell that the object stopped.
    On a coarser ``grid`` (large slices, :mod:`.network_grid`) the networks train and predict there and the
    averaged probabilities come back onto the crop's own grid. The weights come back keyed
    ``"<axis>.<name>"``; ``initial`` is read the same way (a warm start per axis).
    """
    grid = grid or CoarseGrid(1, tuple(volume.shape))
    volume, target, weight = grid.image(volume), grid.samples(target), grid.samples(weight)
    box = grid.covering(region)
    total, state = None, {}
    for number, axis in enumerate(settings.axes):
        own = {k.split(".", 1)[1]: v for k, v in (initial or {}).items() if k.split(".", 1)[0] == str(axis)}
        moved = [np.ascontiguousarray(np.moveaxis(a, axis, 0)) for a in (volume, target, weight)]
        moved_box = None if box is None else (box[axis],) + tuple(box[a] for a in range(3) if a != axis)
        part = PartReporter(reporter, number, len(settings.axes))  # the round's bar runs once over all three
        probabilities, weights = train_and_predict(*moved, num_classes, settings, seed + 97 * axis, device, part,
                                                   f"{stage} (slices across axis {axis})", should_stop, own or None,
                                                   moved_box)
        moved = None  # this axis's copies go before the next axis makes its own
        probabilities = np.moveaxis(probabilities, 1, axis + 1)
        if total is None:
            total = probabilities
        else:
            total += probabilities
        state.update({f"{axis}.{k}": v for k, v in weights.items()})
    return grid.probabilities(total / len(settings.axes), region), state
