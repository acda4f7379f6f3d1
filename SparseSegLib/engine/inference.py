"""Sliding-window prediction that returns probabilities on the input's own voxel grid.

3D networks slide a window over the volume (MONAI ``SlidingWindowInferer``, Gaussian-weighted
mean of softmax). 2D networks run slice by slice along axis 0, with the same inferer in-plane so
slices larger than the training patch are tiled and smaller ones padded. Nothing is resampled, so
the output lies exactly on the input geometry.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from .networks import NetworkConfig


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
