"""The 2D network's view of a volume: whole slices in (with 2.5D context), softmax out; the paper's augmentation.

The labelling network predicts a handful of whole slices per round rather than sliding windows over the volume,
so this is a few batched forward passes on padded slices.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...engine.inference import slice_stack


def rotate_batch(images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                 generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips and rotations up to +-90 degrees (the paper's augmentation), nearest for labels."""
    batch = images.shape[0]
    angles = torch.from_numpy(generator.uniform(-np.pi / 2, np.pi / 2, batch).astype(np.float32))
    flips = torch.from_numpy(np.where(generator.random((batch, 2)) < 0.5, -1.0, 1.0).astype(np.float32))
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flips[:, 0], -sin * flips[:, 1]
    theta[:, 1, 0], theta[:, 1, 1] = sin * flips[:, 0], cos * flips[:, 1]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # unknown target -> weight 0 outside the rotated slice
    targets = F.grid_sample((targets.float() + 1), grid, mode="nearest", padding_mode="zeros", align_corners=False) - 1
    weights = F.grid_sample(weights, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, targets.round().long(), weights


@torch.inference_mode()
def predict_slices(network: torch.nn.Module, image: np.ndarray, slices: np.ndarray, context: int, multiple: int,
                   batch: int = 64) -> np.ndarray:
    """Softmax probabilities ``(C, n, j, i)`` of the given slices of a normalised ``image`` (whole slices, padded).

    The slices go to the device ``network`` lives on and the probabilities come back to the CPU: the validation
    that picks each round's best epoch calls this while the network still sits on the training GPU."""
    network.eval()
    device = next(network.parameters()).device
    height, width = image.shape[1:]
    stack = torch.from_numpy(slice_stack(image, context, slices))
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    stack = F.pad(stack, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    outputs = [torch.softmax(network(stack[i:i + batch].to(device)).float(), 1).cpu()
               for i in range(0, stack.shape[0], batch)]
    probabilities = torch.cat(outputs)[:, :, pad_h // 2: pad_h // 2 + height, pad_w // 2: pad_w // 2 + width]
    return probabilities.permute(1, 0, 2, 3).numpy()
