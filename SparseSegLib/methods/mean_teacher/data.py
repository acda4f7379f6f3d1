"""Training data of the two settings, and the batches: half labelled patches, half unlabelled ones.

* Semi-supervised (``labelled=N``, the papers' setting): N training volumes (drawn with the seed) keep their
  annotation; every other volume is used without any label.
* Sparse (SparseSeg's setting): every volume keeps only its annotated voxels (slices or boxes).

One rule covers both: a voxel is *known* where its volume's annotation says so; the supervised loss sees the
known voxels, the consistency loss the unknown ones. A batch is ``labelled_batch`` patches centred on known
voxels (:class:`~SparseSegLib.engine.sampling.PatchSampler`, so one painted slice is always in view) plus
``unlabelled_batch`` patches anywhere in any volume, as the reference's 2 labelled + 2 unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ...case import Case
from ...engine.preprocessing import normalize
from ...engine.sampling import UNKNOWN, PatchSampler, TrainingVolume, _crop
from ...engine.sitk_preprocessing import Crop, SitkPreprocessing, augmentation
from ...errors import SparseSegError
from .settings import MeanTeacherSettings


def semi_supervised_split(cases: list[Case], labelled: int | None, seed: int) -> list[Case]:
    """The cases as the method may see them: with ``labelled`` set, only that many (seeded) keep their annotation.

    A case without an annotated mask counts as fully annotated; an unlabelled one gets an all-False mask, so
    nothing of its label map is ever read.
    """
    if labelled is None:
        return list(cases)
    if labelled > len(cases):
        raise SparseSegError(f"labelled={labelled} but only {len(cases)} training volumes",
                             f"Use labelled <= {len(cases)}.")
    keep = set(np.random.default_rng(seed).permutation(len(cases))[:labelled].tolist())
    return [case if index in keep else replace(case, annotated=np.zeros(case.image.shape, bool))
            for index, case in enumerate(cases)]


@dataclass
class PreparedVolume:
    """One training volume after preprocessing: image, target (-1 unknown), and where it lies in the input."""

    case_id: str
    image: np.ndarray
    target: np.ndarray
    crop: Crop


def prepare(case: Case, settings: MeanTeacherSettings, normalization: str) -> PreparedVolume:
    """Crop + normalise (SimpleITK steps) or the engine's normalisation alone, and the sparse target."""
    target = case.sparse_label(UNKNOWN)
    if settings.preprocessing:
        step = SitkPreprocessing(margin=settings.margin, percentiles=tuple(settings.clip_percentiles))
        image, crop = step.image(case.image)
        return PreparedVolume(case.case_id, image, step.label(target, crop), crop)
    shape = tuple(int(s) for s in case.image.shape)
    return PreparedVolume(case.case_id, normalize(case.image, normalization), target, Crop((0, 0, 0), shape, shape))


class BatchSource:
    """Draws ``(images, targets)`` batches: labelled patches first, then unlabelled ones (see the module doc)."""

    def __init__(self, volumes: list[PreparedVolume], window: tuple[int, ...], settings: MeanTeacherSettings,
                 seed: int) -> None:
        """``window``: the network's input, 3 sizes (a 3D patch) or 2 (in-plane: one-slice patches, 2D batches)."""
        self.volumes = volumes
        self.flat = len(window) == 2
        self.patch = ((1,) if self.flat else ()) + tuple(int(p) for p in window)  # the crop taken from a volume
        self.settings = settings
        self.rng = np.random.default_rng(seed + 1)
        self.labelled = PatchSampler([TrainingVolume(v.image, v.target) for v in volumes], 3, self.patch,
                                     augment=False, seed=seed)
        self.augment = augmentation(seed, rotate=self.patch[1] == self.patch[2]) if settings.augment else None
        self.unlabelled_batch = settings.unlabelled_batch if settings.uses_teacher else 0
        self._unlabelled = [i for i, v in enumerate(volumes) if np.any(v.target < 0)] or list(range(len(volumes)))

    def _random_patch(self) -> tuple[np.ndarray, np.ndarray]:
        # from volumes with unknown voxels (the reference's unlabelled volumes; in the sparse setting: all)
        volume = self.volumes[int(self.rng.choice(self._unlabelled))]
        starts = [int(self.rng.integers(min(0, n - p), max(0, n - p) + 1)) for n, p in zip(volume.image.shape, self.patch)]
        return _crop(volume.image, starts, self.patch, 0.0)[None], _crop(volume.target, starts, self.patch, UNKNOWN)

    def _augmented(self, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.augment is None:
            return image, target
        known = (target >= 0)[None].astype(np.float32)
        turned = self.augment({"image": image, "target": np.clip(target, 0, None)[None].astype(np.float32),
                               "known": known})
        target = np.where(np.asarray(turned["known"])[0] > 0.5, np.rint(np.asarray(turned["target"])[0]), UNKNOWN)
        return np.asarray(turned["image"], dtype=np.float32), target.astype(np.int64)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (B, 1, *window) float32 and ``targets`` (B, *window) int64, -1 unknown (a 2D window: the
        one-slice patches without their slice axis)."""
        images, targets = [], []
        batch = self.settings.labelled_batch + (0 if self.unlabelled_batch else self.settings.unlabelled_batch)
        for _ in range(batch):
            image, target, _ = self.labelled._one_patch()
            image, target = self._augmented(image, target)
            images.append(image)
            targets.append(target)
        for _ in range(self.unlabelled_batch):
            image, target = self._augmented(*self._random_patch())
            images.append(image)
            targets.append(target)
        images, targets = np.stack(images).astype(np.float32), np.stack(targets).astype(np.int64)
        if self.flat:
            images, targets = images[:, :, 0], targets[:, 0]
        return torch.from_numpy(images), torch.from_numpy(targets)
