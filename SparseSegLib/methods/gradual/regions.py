"""The labelled regions of Gradual Learning: annotated boxes/slices, grown by ``step`` voxels per round.

After ``r - 1`` growths a region is the Chebyshev dilation of the annotated mask by ``(r - 1) * step``
voxels along the growth axes (all three for 3D GL; the painted slice axis for the 2D slice-stack form),
clipped at the volume border. Training crops are drawn inside the grown regions' bounding boxes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ...engine.sampling import PatchSampler
from ...errors import SparseSegError

Box = tuple[tuple[int, int, int], tuple[int, int, int]]


def region_boxes(annotated: np.ndarray) -> list[Box]:
    """``(low, high)`` bounding boxes (high exclusive) of the connected parts of an annotated mask."""
    components, count = ndimage.label(np.asarray(annotated, bool), structure=np.ones((3, 3, 3), bool))
    boxes = []
    for found in ndimage.find_objects(components)[:count]:
        if found is not None:
            boxes.append((tuple(s.start for s in found), tuple(s.stop for s in found)))
    return boxes


def grow_box(box, amount: int, shape: tuple[int, ...], axes: tuple[int, ...]):
    """A box grown by ``amount`` voxels on both sides along ``axes``, clipped at the volume border."""
    low, high = list(box[0]), list(box[1])
    for axis in axes:
        low[axis] = max(0, low[axis] - amount)
        high[axis] = min(shape[axis], high[axis] + amount)
    return tuple(low), tuple(high)


def grow_mask(mask: np.ndarray, amount: int, axes: tuple[int, ...]) -> np.ndarray:
    """Chebyshev dilation of ``mask`` by ``amount`` voxels along ``axes`` (clipped at the border).

    For a box this is exactly the box grown by ``amount`` in each direction of ``axes``.
    """
    mask = np.asarray(mask, bool)
    if amount <= 0:
        return mask.copy()
    size = [1, 1, 1]
    for axis in axes:
        size[axis] = 2 * amount + 1
    return ndimage.maximum_filter(mask.astype(np.uint8), size=tuple(size), mode="constant", cval=0).astype(bool)


def cover_distance(mask: np.ndarray, axes: tuple[int, ...]) -> int:
    """How far (Chebyshev, along ``axes``) the farthest voxel lies from ``mask``: growths to cover the volume.

    Along one axis only, the distance is counted in slices across that axis (from the nearest slice that holds
    any annotated voxel), which is what growing whole slices needs.
    """
    mask = np.asarray(mask, bool)
    if mask.all():
        return 0
    if not mask.any():
        raise SparseSegError("no annotated voxel to grow from", "Annotate at least one slice or box.")
    if len(axes) == 1:
        axis = int(axes[0])
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        positions = np.arange(mask.shape[axis])
        return int(np.max(np.min(np.abs(positions[:, None] - occupied[None]), axis=1)))
    return int(ndimage.distance_transform_cdt(~mask, metric="chessboard").max())


def auto_step(annotated_masks: list[np.ndarray], axes: tuple[int, ...], rounds: int) -> int:
    """The default growth per round: 1/10 of the mean box edge for boxes (the paper's s = 8 for 80^3 boxes);
    for thin regions (slices) the growth that covers the volume in the planned rounds."""
    edges, thin = [], False
    for mask in annotated_masks:
        for low, high in region_boxes(mask):
            extents = [high[a] - low[a] for a in axes]
            if min(extents) <= 1:
                thin = True
            edges.append(float(np.mean(extents)))
    if not thin and edges:
        return max(1, int(round(np.mean(edges) / 10.0)))
    if rounds <= 1:
        return 1
    return max(1, math.ceil(max(cover_distance(mask, axes) for mask in annotated_masks) / (rounds - 1)))


class RegionPatchSampler(PatchSampler):
    """Uniformly random crops inside the labelled regions (the paper's "random 64^3 crops within these subvolumes").

    A region is picked with probability proportional to its volume; the crop lies inside it where the region is
    at least the crop's size along an axis and covers it otherwise. Voxels of the crop without a label (a region
    smaller than the crop) are unknown and do not reach the loss. Boxes are in the sampler's volumes' frame (for
    a 2D network: slice axis first).
    """

    def __init__(self, volumes, dims, patch_size, regions: list[list[Box]], context_slices: int = 0,
                 augment: bool = False, seed: int = 0) -> None:
        super().__init__(volumes, dims, patch_size, context_slices=context_slices, augment=augment, seed=seed)
        self.regions = [[((tuple(int(v) for v in low)), tuple(int(v) for v in high)) for low, high in boxes]
                        for boxes in regions]
        self._choices = [(v, b) for v in self._usable for b in range(len(self.regions[v]))]
        sizes = np.array([float(np.prod(np.subtract(self.regions[v][b][1], self.regions[v][b][0])))
                          for v, b in self._choices])
        self._weights = sizes / sizes.sum() if sizes.size else sizes

    def _choose_crop(self) -> tuple[int, list[int]]:
        if not self._choices:
            return super()._choose_crop()
        volume_index, box_index = self._choices[int(self.rng.choice(len(self._choices), p=self._weights))]
        low, high = self.regions[volume_index][box_index]
        shape = self.volumes[volume_index].target.shape
        starts = []
        for lo, hi, p, n in zip(low, high, self.full_patch, shape):
            extent = hi - lo
            if extent >= p:
                start = lo + int(self.rng.integers(extent - p + 1))
            else:  # the crop covers the region at a random offset, kept inside the volume where it fits
                start = lo - int(self.rng.integers(p - extent + 1))
                start = int(np.clip(start, 0, n - p)) if n >= p else int(np.clip(start, n - p, 0))
            starts.append(start)
        return volume_index, starts
