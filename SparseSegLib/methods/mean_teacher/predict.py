"""Prediction on the input's grid: the student through a sliding window, the teacher's uncertainty map.

With the SimpleITK preprocessing the student sees the crop around the scan's non-zero voxels, normalised as in
training, and its probabilities are put back into the full grid (background outside the box), so a written
result always has the input's size, spacing, origin and direction. The saved model stores ``normalization
"sitk"``, so the plain engine (``sparseseg predict``) repeats the same intensity steps on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from ...engine.inference import predict_probabilities
from ...engine.model import Segmenter
from ...engine.preprocessing import normalize
from ...engine.sitk_preprocessing import Crop, SitkPreprocessing
from .teacher import monte_carlo, normalized_entropy


@dataclass
class CroppingSegmenter(Segmenter):
    """A :class:`Segmenter` that predicts on the crop of the seed's preprocessing and un-crops the result."""

    margin: int = 4

    def crop_of(self, image: np.ndarray) -> Crop:
        if self.normalization != "sitk":
            shape = tuple(int(s) for s in image.shape)
            return Crop((0, 0, 0), shape, shape)
        return SitkPreprocessing(margin=self.margin).crop_of(image)

    def grid_probabilities(self, image: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        crop = self.crop_of(image)
        inside = predict_probabilities(self.network, normalize(crop.apply(image), self.normalization),
                                       self.network_config, self.patch_size, torch.device(device))
        background = np.zeros((inside.shape[0], 1, 1, 1), np.float32)
        background[0] = 1.0
        return crop.uncrop(inside) + (1 - crop.uncrop(np.ones((1,) + crop.size, np.float32))) * background


@torch.no_grad()
def teacher_uncertainty(teacher: torch.nn.Module, segmenter: CroppingSegmenter, image: np.ndarray,
                        passes: int, noise: float, device: torch.device) -> np.ndarray:
    """The teacher's normalised entropy in [0, 1] over the whole scan ``(k, j, i)`` (0 outside the crop).

    ``passes`` stochastic passes (dropout live, input noise) through MONAI's ``sliding_window_inference`` on the
    crop (slice by slice for the 2D form), as UA-MT's uncertainty but over every voxel.
    """
    crop = segmenter.crop_of(image)
    volume = torch.from_numpy(normalize(crop.apply(image), segmenter.normalization))
    # 3D: one (1, 1, k, j, i) volume; the 2D form: its slices across axis 0 as a batch (k, 1, j, i)
    tensor = (volume[None, None] if segmenter.network_config.dims == 3 else volume[:, None]).to(device)
    teacher.to(device).train()

    def window(patch: torch.Tensor) -> torch.Tensor:
        mean, _ = monte_carlo(teacher, patch, passes, noise)
        return mean

    mean = sliding_window_inference(tensor, segmenter.patch_size, 4, window, overlap=0.25, mode="gaussian")
    entropy = -(mean * torch.log(mean + 1e-6)).sum(dim=1, keepdim=True)
    entropy = normalized_entropy(entropy, mean.shape[1])
    entropy = entropy[0, 0] if segmenter.network_config.dims == 3 else entropy[:, 0]
    return crop.uncrop(entropy.float().cpu().numpy())
