"""Sliding-window prediction that returns probabilities on the input's own voxel grid.

3D networks slide a window over the volume (MONAI ``SlidingWindowInferer``, Gaussian-weighted
mean of softmax). 2D networks run slice by slice along axis 0, with the same inferer in-plane so
slices larger than the training patch are tiled and smaller ones padded; an axis ensemble runs each
member across its own axis and averages the probabilities. Nothing is resampled, so
the output lies exactly on the input geometry.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from .axis_ensemble import AxisEnsemble, from_axis, to_axis
from .networks import NetworkConfig, default_patch_size


@torch.no_grad()  # not inference_mode: a network moved to the GPU in there gets inference-tensor weights (below)
def predict_probabilities(
    network: torch.nn.Module,
    image: np.ndarray,
    config: NetworkConfig,
    patch_size: tuple[int, ...],
    device: torch.device,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    slice_chunk: int = 64,
) -> np.ndarray:
    """Softmax probabilities ``(C, k, j, i)`` for a normalised ``image`` ``(k, j, i)``.

    ``network`` is moved to ``device`` and stays there. Under ``torch.inference_mode`` that move would make its
    weights inference tensors, and a method that trains the same network again after predicting with it (the
    self-labelling rounds, ``sparse-only`` jobs, ``gradual``) would fail on a GPU with "Inference tensors cannot be
    saved for backward"; on the CPU the move is a no-op, which is why only a GPU shows it. Hence ``no_grad``.
    """

    def inferer(roi: tuple[int, ...]) -> SlidingWindowInferer:
        return SlidingWindowInferer(roi_size=tuple(roi), sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian",
                                    padding_mode="constant")

    if config.dims == 3:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
        return inferer(patch_size)(tensor, _softmax(network, device))[0].float().cpu().numpy()
    # 2D: one network across axis 0, or an axis ensemble whose members' softmax is averaged (the split between object
    # classes from config.class_members alone, where given)
    # (a single network may run across another axis than 0: one exported from a job painted across that axis)
    members = zip(network.members, network.axes) if isinstance(network, AxisEnsemble) else [(network, config.axes[0])]
    total, count, class_total = None, 0, None
    for number, (member, axis) in enumerate(members):
        view = to_axis(image, axis)
        swapped = bool(config.swap_in_plane and config.swap_in_plane[number])
        if swapped:  # this member learnt its slices with the two in-plane axes the other way round
            view = view.swapaxes(1, 2)
        roi = patch_size if axis == 0 and not swapped else default_patch_size(view.shape, config)  # the saved patch is axis 0's
        window, softmax = inferer(roi), _softmax(member, device)
        probabilities = None  # (C, k, j, i), filled chunk by chunk: neither the whole input stack nor a list of
        for first in range(0, view.shape[0], slice_chunk):  # outputs is ever held (a CT-sized crop: GiBs)
            chunk = slice_stack(view, config.context_slices, np.arange(first, min(first + slice_chunk, view.shape[0])))
            output = window(torch.from_numpy(chunk).to(device), softmax).float().cpu().numpy()
            if probabilities is None:
                probabilities = np.empty((output.shape[1], view.shape[0]) + output.shape[2:], np.float32)
            probabilities[:, first:first + chunk.shape[0]] = output.transpose(1, 0, 2, 3)
        if swapped:
            probabilities = probabilities.swapaxes(2, 3)
        probabilities = from_axis(probabilities, axis, 1)
        total, count = (probabilities if total is None else total + probabilities), count + 1
        if number in config.class_members:
            class_total = probabilities if class_total is None else class_total + probabilities
    mean = total if count == 1 else total / count
    return mean if class_total is None else split_by(mean, class_total)


def split_by(probabilities: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``probabilities`` ``(C, ...)`` with their object probability (1 - background) shared among the object classes
    in the proportions ``classes`` gives them (``config.class_members``: the members that split the classes best
    need not be the ones that find the object best). Two classes (one object): unchanged."""
    if probabilities.shape[0] <= 2:
        return probabilities
    split = classes[1:] / np.maximum(classes[1:].sum(0, keepdims=True), 1e-6)
    return np.concatenate([probabilities[:1], (1 - probabilities[:1]) * split])


def _softmax(network: torch.nn.Module, device: torch.device):
    """``network`` in eval mode on ``device`` as a function returning float32 softmax (autocast on CUDA)."""
    network.to(device).eval()
    autocast = torch.autocast("cuda") if device.type == "cuda" else contextlib.nullcontext()

    def softmax_network(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return torch.softmax(network(x).float(), dim=1)

    return softmax_network


def slice_stack(image: np.ndarray, context_slices: int, slices: np.ndarray | None = None) -> np.ndarray:
    """``(n, 1 + 2c, j, i)``: the given ``slices`` (all by default) each with ``c`` neighbours on each side
    (the volume's edge slices repeated)."""
    depth = image.shape[0]
    slices = np.arange(depth) if slices is None else np.asarray(slices)
    offsets = np.arange(-context_slices, context_slices + 1)
    index = np.clip(slices[:, None] + offsets[None], 0, depth - 1)
    return np.ascontiguousarray(image[index], dtype=np.float32)
