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


@torch.inference_mode()
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
    """Softmax probabilities ``(C, k, j, i)`` for a normalised ``image`` ``(k, j, i)``."""
    network.to(device).eval()
    inferer = SlidingWindowInferer(
        roi_size=tuple(patch_size), sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian", padding_mode="constant"
    )
    autocast = torch.autocast("cuda") if device.type == "cuda" else contextlib.nullcontext()

    def softmax_network(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return torch.softmax(network(x).float(), dim=1)

    if config.dims == 3:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
        return inferer(tensor, softmax_network)[0].float().cpu().numpy()

    if isinstance(network, AxisEnsemble):  # one 2D network per slice axis, softmax averaged
        total = None
        for member, axis in zip(network.members, network.axes):
            view = to_axis(image, axis)
            roi = tuple(patch_size) if axis == 0 else default_patch_size(view.shape, config)
            member_inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=overlap,
                                                  mode="gaussian", padding_mode="constant")
            probabilities = from_axis(_predict_slices(member, view, config, member_inferer, device, slice_chunk), axis, 1)
            total = probabilities if total is None else total + probabilities
        return total / len(network.axes)
    return _predict_slices(network, image, config, inferer, device, slice_chunk)


def _predict_slices(network: torch.nn.Module, image: np.ndarray, config: NetworkConfig, inferer: SlidingWindowInferer,
                    device: torch.device, slice_chunk: int) -> np.ndarray:
    """``(C, k, j, i)`` softmax of a 2D network applied to every slice across axis 0."""
    network.to(device).eval()
    autocast = torch.autocast("cuda") if device.type == "cuda" else contextlib.nullcontext()

    def softmax_network(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return torch.softmax(network(x).float(), dim=1)

    stack = slice_stack(image, config.context_slices)
    outputs = []
    for first in range(0, stack.shape[0], slice_chunk):
        chunk = torch.from_numpy(stack[first : first + slice_chunk]).to(device)
        outputs.append(inferer(chunk, softmax_network).float().cpu().numpy())
    return np.concatenate(outputs).transpose(1, 0, 2, 3)


def slice_stack(image: np.ndarray, context_slices: int) -> np.ndarray:
    """``(k, 1 + 2c, j, i)``: every slice with ``c`` neighbours on each side (edges repeated)."""
    depth = image.shape[0]
    offsets = np.arange(-context_slices, context_slices + 1)
    index = np.clip(np.arange(depth)[:, None] + offsets[None], 0, depth - 1)
    return np.ascontiguousarray(image[index], dtype=np.float32)
