"""The SimpleITK preprocessing of the Mean Teacher / UA-MT seed, as a step any method can use.

The seed (Cheng & Song, "Efficient MRI image segmentation using semi-supervised learning") prepares every
volume in four SimpleITK steps before training: (1) a bounding box around a mask (their brain mask: the
non-zero voxels), so the network does not spend its patches on empty space; (2) z-score normalisation over the
non-zero voxels only, so the zero background does not drag the mean; (3) clipping at a percentile of the
intensity distribution (its CDF), so a few bright outliers do not squeeze the useful range; (4) binarised
labels. Training then adds random rotation and cropping (:class:`RandomTurnFlip`; crops are the sampler's).

Everything a method writes back must lie on the *input's* voxel grid, so :class:`Crop` remembers where the box
sits and :meth:`Crop.uncrop` puts a result computed on the crop back into the full grid; the crop's own
SimpleITK image (:meth:`Crop.crop_image`) carries the shifted origin, which is how a reader can check the two
agree. Arrays are ``(k, j, i)`` as everywhere in SparseSeg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..case import Geometry
from ..errors import SparseSegError

#: Intensity percentiles the clipping keeps by default (of the non-zero voxels' distribution).
DEFAULT_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Crop:
    """A box ``[start, stop)`` per array axis ``(k, j, i)`` inside a volume of ``shape``."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The box of ``array`` (its last three axes; channels in front are kept)."""
        return np.ascontiguousarray(array[(Ellipsis,) + self.slices])

    def uncrop(self, array: np.ndarray, fill: float = 0) -> np.ndarray:
        """``array`` (the crop's size, optionally with leading channels) placed back into the full grid."""
        full = np.full(array.shape[:-3] + tuple(self.shape), fill, dtype=array.dtype)
        full[(Ellipsis,) + self.slices] = array
        return full

    def crop_image(self, image: sitk.Image) -> sitk.Image:
        """The SimpleITK crop (``RegionOfInterest``): same spacing and direction, origin moved to the box."""
        index = [int(v) for v in reversed(self.start)]  # (i, j, k) order for ITK
        return sitk.RegionOfInterest(image, [int(v) for v in reversed(self.size)], index)

    def to_dict(self) -> dict:
        return {"start": list(self.start), "stop": list(self.stop), "shape": list(self.shape)}


def bounding_box(mask: np.ndarray, margin: int | tuple[int, int, int] = 0) -> Crop:
    """The box around the ``True`` voxels of ``mask``, grown by ``margin`` voxels and kept inside the volume.

    Uses SimpleITK's ``LabelShapeStatisticsImageFilter`` as the seed does. An empty mask gives the whole volume
    (nothing to crop to is not a reason to fail).
    """
    shape = tuple(int(s) for s in mask.shape)
    margins = (margin,) * 3 if np.isscalar(margin) else tuple(margin)
    if not np.any(mask):
        return Crop((0, 0, 0), shape, shape)
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8)))
    box = statistics.GetBoundingBox(1)  # (i, j, k, size_i, size_j, size_k)
    start_ijk, size_ijk = box[:3], box[3:]
    start = tuple(max(0, int(start_ijk[2 - a]) - int(margins[a])) for a in range(3))
    stop = tuple(min(shape[a], int(start_ijk[2 - a]) + int(size_ijk[2 - a]) + int(margins[a])) for a in range(3))
    return Crop(start, stop, shape)


def zscore_nonzero(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit variance over the ``mask`` (default: non-zero) voxels; voxels outside stay 0.

    The background of a skull-stripped scan is exactly 0 and carries no information; counting it would make
    the statistics depend on how much of it the field of view holds.
    """
    image = np.asarray(image, dtype=np.float32)
    mask = image != 0 if mask is None else np.asarray(mask, bool)
    if not mask.any():
        return np.zeros_like(image)
    values = image[mask]
    sd = float(values.std())
    result = np.zeros_like(image)
    result[mask] = (values - float(values.mean())) / (sd if sd > 1e-6 else 1.0)
    return result


def clip_percentiles(image: np.ndarray, mask: np.ndarray | None = None,
                     percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Clip intensities at the ``percentiles`` of the ``mask`` (default: non-zero) voxels' distribution.

    SimpleITK's ``ClampImageFilter`` does the clipping; the bounds are read off the empirical CDF.
    """
    low_p, high_p = percentiles
    if not 0 <= low_p < high_p <= 100:
        raise SparseSegError(f"clipping percentiles {percentiles} must satisfy 0 <= low < high <= 100",
                             "E.g. clip_percentiles=[0.5, 99.5].")
    image = np.asarray(image, dtype=np.float32)
    mask = image != 0 if mask is None else np.asarray(mask, bool)
    if not mask.any():
        return image.copy()
    low, high = np.percentile(image[mask], [low_p, high_p])
    clamped = sitk.Clamp(sitk.GetImageFromArray(image), sitk.sitkFloat32, float(low), float(high))
    result = sitk.GetArrayFromImage(clamped)
    result[~mask] = image[~mask]  # the background keeps its value (0 after the z-score)
    return result


def binarize_label(label: np.ndarray) -> np.ndarray:
    """Every labelled structure as one foreground class (the seed's binary task), with SimpleITK."""
    image = sitk.GetImageFromArray(np.asarray(label, dtype=np.int16))
    return sitk.GetArrayFromImage(sitk.BinaryThreshold(image, 1, 32767, 1, 0)).astype(np.uint8)


def normalize_intensity(image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """The seed's intensity steps (z-score over non-zero voxels, then percentile clipping) on a whole image.

    A pure function of the image, so it can be stored as a model's ``normalization`` (``"sitk"``) and
    repeated at prediction time on any new scan.
    """
    image = np.asarray(image, dtype=np.float32)
    mask = image != 0
    return clip_percentiles(zscore_nonzero(image, mask), mask, percentiles)


@dataclass(frozen=True)
class SitkPreprocessing:
    """The whole step: crop to the mask's box (+ ``margin`` voxels), normalise, optionally binarise labels.

    ``mask`` is where the box comes from: ``"nonzero"`` (the seed's brain mask: a skull-stripped scan's
    non-zero voxels; usable at prediction time) or ``"none"`` (no crop).
    """

    mask: str = "nonzero"
    margin: int = 4
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    binarize: bool = False

    def __post_init__(self) -> None:
        if self.mask not in ("nonzero", "none"):
            raise SparseSegError(f"unknown preprocessing mask {self.mask!r}", "Use nonzero or none.")

    def crop_of(self, image: np.ndarray) -> Crop:
        shape = tuple(int(s) for s in image.shape)
        if self.mask == "none":
            return Crop((0, 0, 0), shape, shape)
        return bounding_box(np.asarray(image) != 0, self.margin)

    def image(self, image: np.ndarray) -> tuple[np.ndarray, Crop]:
        """The normalised crop of ``image`` and where it lies."""
        crop = self.crop_of(image)
        return normalize_intensity(crop.apply(np.asarray(image, dtype=np.float32)), self.percentiles), crop

    def label(self, label: np.ndarray, crop: Crop) -> np.ndarray:
        """``label`` cut to ``crop`` (binarised when asked; negative = unknown is kept)."""
        cut = crop.apply(label)
        if not self.binarize:
            return cut
        binary = binarize_label(np.clip(cut, 0, None)).astype(cut.dtype)
        return np.where(cut < 0, cut, binary)


def write_on_input_grid(array: np.ndarray, crop: Crop, geometry: Geometry, path, fill: float = 0):
    """Write a result computed on ``crop`` to ``path`` on the input's full grid (``geometry``); returns the path."""
    from ..io import write_image

    return write_image(crop.uncrop(array, fill), geometry, path)


class RandomTurnFlip:
    """The seed's random rotation (90 degree turns in the slice plane) and flips, seeded, on dicts of arrays.

    Keys are turned together; arrays are ``(C, k, j, i)``. In-plane turns need square in-plane patches; with
    non-square ones only flips are used (a turn would change the patch shape). MONAI's ``RandRotate90d`` +
    three ``RandFlipd`` do the same but cost 0.1 s per patch here (metadata bookkeeping), a quarter of a training
    step on a 2-core CPU, so this is plain numpy with the same distribution (k ~ U{0..3} turns with probability
    0.5, each axis flipped with probability 0.5).
    """

    def __init__(self, seed: int, rotate: bool = True, flip: bool = True) -> None:
        self.rng = np.random.default_rng(seed)
        self.rotate = rotate
        self.flip = flip

    def __call__(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        turns = int(self.rng.integers(1, 4)) if self.rotate and self.rng.random() < 0.5 else 0
        flips = [axis for axis in (1, 2, 3) if self.flip and self.rng.random() < 0.5]
        result = {}
        for key, array in data.items():
            if turns:
                array = np.rot90(array, turns, axes=(2, 3))
            if flips:
                array = np.flip(array, flips)
            result[key] = np.ascontiguousarray(array)
        return result


def augmentation(seed: int, rotate: bool = True, flip: bool = True) -> RandomTurnFlip:
    """The training augmentation of the seed (see :class:`RandomTurnFlip`)."""
    return RandomTurnFlip(seed, rotate, flip)
