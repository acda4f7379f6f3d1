"""The network round on a coarser in-plane grid for large slices (``propagate``'s ``network_max_pixels``).

A 2D network's training costs the same on any grid (fixed patches, fixed steps), but its prediction grows with the
voxels it covers: on a 512 x 512 x 300 scan whose object fills most of the slice the three networks predicted about
68 million voxels each, most of the network round's time once the registration had moved to a coarser grid
(docs/results/interactive.md, "Twenty-fourth session"). With the option set, slices of such a crop are shrunk
in-plane by the registration's rule (the smallest power of two that brings them under the cap); off by default, as
it cost about a Dice point where it saved a fifth of the time ("Twenty-fifth session"). Only the in-plane axes shrink: the
painted slices lie along axis 0 and stay whole, exactly as painted. Coarse voxel ``n`` sits on the centre of fine
voxel ``n * factor``, so labels are sampled there without interpolation and the probabilities come back by linear
interpolation between those centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ...engine.propagation import registration_shrink


@dataclass(frozen=True)
class CoarseGrid:
    """The in-plane subsampling of a ``(k, j, i)`` crop by ``factor`` (1: the crop's own grid)."""

    factor: int
    shape: tuple[int, int, int]  # the fine crop's shape

    @classmethod
    def for_crop(cls, shape: tuple[int, int, int], max_pixels: int) -> CoarseGrid:
        return cls(registration_shrink(tuple(shape[1:]), max_pixels), tuple(int(n) for n in shape))

    def image(self, image: np.ndarray) -> np.ndarray:
        """The intensities at the coarse voxels, smoothed first (Gaussian, half a coarse voxel) so that noise finer
        than the coarse grid does not alias into it; the same smoothing the registration's coarse grid uses."""
        if self.factor == 1:
            return image
        sigma = (0.0, 0.5 * self.factor, 0.5 * self.factor)
        smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma, mode="nearest")
        return np.ascontiguousarray(smooth[:, ::self.factor, ::self.factor])

    def samples(self, array: np.ndarray) -> np.ndarray:
        """Labels, weights and masks at the coarse voxels (no interpolation: a label stays a label)."""
        if self.factor == 1:
            return array
        return np.ascontiguousarray(array[:, ::self.factor, ::self.factor])

    def covering(self, region: tuple[slice, slice, slice] | None) -> tuple[slice, slice, slice] | None:
        """The coarse box whose voxel centres enclose the fine ``region`` (one more coarse voxel past its far edge
        where the grid has one)."""
        if self.factor == 1 or region is None:
            return region
        coarse = [region[0]]
        for axis in (1, 2):
            start, stop, _ = region[axis].indices(self.shape[axis])
            size = -(-self.shape[axis] // self.factor)
            coarse.append(slice(start // self.factor, min(size, (stop - 1) // self.factor + 2)))
        return tuple(coarse)

    def probabilities(self, coarse: np.ndarray, region: tuple[slice, slice, slice] | None) -> np.ndarray:
        """``(C, k, j, i)`` probabilities predicted over :meth:`covering` ``(region)`` brought back onto the fine
        ``region`` (all of the crop when None) by linear interpolation in-plane, renormalised to sum 1."""
        if self.factor == 1:
            return coarse
        region = region or tuple(slice(0, n) for n in self.shape)
        box = self.covering(region)
        tensor = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32)).permute(1, 0, 2, 3)  # k as batch
        tensor = F.pad(tensor, (0, 1, 0, 1), mode="replicate")  # past the last coarse centre: its value
        size = [(tensor.shape[2] - 1) * self.factor + 1, (tensor.shape[3] - 1) * self.factor + 1]
        fine = F.interpolate(tensor, size=size, mode="bilinear", align_corners=True)
        cut = []
        for axis in (1, 2):
            start, stop, _ = region[axis].indices(self.shape[axis])
            offset = start - box[axis].start * self.factor
            cut.append(slice(offset, offset + stop - start))
        fine = fine[:, :, cut[0], cut[1]].permute(1, 0, 2, 3).numpy()
        return fine / np.maximum(fine.sum(0, keepdims=True), 1e-6)
