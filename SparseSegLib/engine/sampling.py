"""Random training patches drawn from the annotated voxels of sparse label maps.

A patch is centred (with jitter) on a voxel that carries a label, so a network trained on one
annotated slice sees that slice and its surroundings rather than unknown space. Voxels outside the
annotation come out as target ``-1`` with weight 0 and never reach the loss. Volumes smaller than a
patch are padded the same way, so whole small volumes (hippocampus crops) fit in one patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SparseSegError

UNKNOWN = -1


@dataclass
class TrainingVolume:
    """One normalised image with its (sparse) target: class per voxel, ``UNKNOWN`` where not labelled.

    ``weight`` optionally scales each labelled voxel's loss (e.g. pseudo-labels far from the ground
    truth count less); None means 1 everywhere a label exists.
    """

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None = None


class PatchSampler:
    """Draws batches of 2D slices or 3D sub-volumes centred on labelled voxels.

    With probability ``foreground_ratio`` the centre is a labelled foreground voxel (so small organs
    are not drowned by background), otherwise any labelled voxel. ``context_slices`` adds that many
    neighbouring slices on each side as input channels to 2D patches (2.5D).
    """

    def __init__(
        self,
        volumes: list[TrainingVolume],
        dims: int,
        patch_size: tuple[int, ...],
        context_slices: int = 0,
        foreground_ratio: float = 0.5,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        if dims not in (2, 3) or len(patch_size) != dims:
            raise ValueError(f"patch size {patch_size} does not fit a {dims}D network")
        self.volumes = volumes
        self.dims = dims
        self.patch_size = tuple(int(p) for p in patch_size)
        self.context_slices = context_slices
        self.foreground_ratio = foreground_ratio
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._labelled = [_indices(v.target.ravel() >= 0) for v in volumes]
        self._foreground = [_indices(v.target.ravel() > 0) for v in volumes]
        self._usable = [i for i, idx in enumerate(self._labelled) if idx.size]
        if not self._usable:
            raise SparseSegError("no annotated voxel to train on", "Annotate at least one slice or box.")

    @property
    def labelled_voxels(self) -> int:
        return int(sum(idx.size for idx in self._labelled))

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, targets, weights)`` tensors shaped ``(B, C, *patch)``, ``(B, 1, *patch)`` twice."""
        images, targets, weights = [], [], []
        for _ in range(batch_size):
            image, target, weight = self._one_patch()
            images.append(image)
            targets.append(target)
            weights.append(weight)
        return (
            torch.from_numpy(np.stack(images)),
            torch.from_numpy(np.stack(targets)[:, None].astype(np.int64)),
            torch.from_numpy(np.stack(weights)[:, None]),
        )

    @property
    def full_patch(self) -> tuple[int, ...]:
        """The crop in volume axes: one slice of ``patch_size`` for 2D, ``patch_size`` itself for 3D."""
        return (1,) + self.patch_size if self.dims == 2 else self.patch_size

    def _choose_crop(self) -> tuple[int, list[int]]:
        """Which volume and where the crop starts: around a random labelled (or foreground) voxel.

        Subclasses that sample differently (e.g. uniformly inside regions) override only this.
        """
        index = int(self.rng.choice(self._usable))
        shape = self.volumes[index].target.shape
        pool = self._foreground[index] if self._foreground[index].size and self.rng.random() < self.foreground_ratio else self._labelled[index]
        centre = np.unravel_index(int(pool[self.rng.integers(pool.size)]), shape)
        return index, [self._start(int(c), p, n) for c, p, n in zip(centre, self.full_patch, shape)]

    def _one_patch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index, starts = self._choose_crop()
        volume = self.volumes[index]
        full_patch = self.full_patch
        target = _crop(volume.target, starts, full_patch, UNKNOWN)
        weight = np.where(target >= 0, 1.0, 0.0).astype(np.float32)
        if volume.weight is not None:
            weight *= _crop(volume.weight, starts, full_patch, 0.0)
        if self.dims == 2:
            c = self.context_slices
            channel_starts = [starts[0] - c] + starts[1:]
            image = _crop(volume.image, channel_starts, (2 * c + 1,) + self.patch_size, 0.0, clamp_axis0=True)
            target, weight = target[0], weight[0]
        else:
            image = _crop(volume.image, starts, full_patch, 0.0)[None]
        if self.augment:
            image, target, weight = self._flip(image, target, weight)
        return image.astype(np.float32), target, weight

    def _start(self, centre: int, patch: int, size: int) -> int:
        """First index of a patch holding ``centre`` at a random position, kept inside the volume."""
        if patch == 1:
            return centre
        start = centre - int(self.rng.integers(patch))
        if size >= patch:
            return int(np.clip(start, 0, size - patch))
        return int(np.clip(start, size - patch, 0))

    def _flip(self, image: np.ndarray, target: np.ndarray, weight: np.ndarray):
        for axis in range(self.dims):
            if self.rng.random() < 0.5:
                image = np.flip(image, axis + 1)
                target = np.flip(target, axis)
                weight = np.flip(weight, axis)
        return np.ascontiguousarray(image), np.ascontiguousarray(target), np.ascontiguousarray(weight)


def _indices(mask: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """Flat indices of ``mask``'s true voxels, as int32 where they fit: a CT-sized crop labelled almost everywhere
    (a single-scan job's far background) holds tens of millions of them. Found ``chunk`` voxels at a time, so the
    int64 indices numpy returns never exist for the whole mask at once (0.5 GiB on such a crop)."""
    if mask.size >= 2**31:
        return np.flatnonzero(mask)
    flat = mask.ravel()
    found = np.empty(int(np.count_nonzero(flat)), np.int32)
    filled = 0
    for start in range(0, flat.size, chunk):
        part = np.flatnonzero(flat[start:start + chunk])
        found[filled:filled + part.size] = part + start
        filled += part.size
    return found


def _crop(array: np.ndarray, starts: list[int], size: tuple[int, ...], fill: float, clamp_axis0: bool = False) -> np.ndarray:
    """``array[start:start+size]`` per axis, with ``fill`` outside the array.

    ``clamp_axis0`` repeats the edge slice instead (context slices beyond the stack's end).
    """
    indices, valid = [], []
    for axis, (start, length) in enumerate(zip(starts, size)):
        index = np.arange(start, start + length)
        inside = (index >= 0) & (index < array.shape[axis])
        if clamp_axis0 and axis == 0:
            inside = np.ones_like(inside)
        indices.append(np.clip(index, 0, array.shape[axis] - 1))
        valid.append(inside)
    patch = array[np.ix_(*indices)]
    if not all(v.all() for v in valid):
        patch = patch.copy()
        mask = np.ix_(*valid)
        outside = np.ones(patch.shape, bool)
        outside[mask] = False
        patch[outside] = fill
    return patch
