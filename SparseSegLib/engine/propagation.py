"""Registration propagation: carry painted slices' labels through a volume, slice by slice.

Neighbouring slices of a scan differ by a small deformation, so a label painted on one slice can be moved to
the next by registering the two slices' images (SimpleITK's symmetric-forces demons, a dense 2D displacement
field) and warping the label with that field; repeated, the label travels outwards until the next painted slice
or the end of the volume. Between two painted slices both chains are blended by distance, so a gap is filled
from both ends (what Slicer's Fill between slices does by shape alone, here guided by the image). This is the
self-supervised branch of the collaborative-learning seed (methods.md section 4) in its training-free form, and
the single-scan default's first result (``methods/propagate``).

Labels travel as soft one-hot maps (linear interpolation of each foreground class), so the output is a
probability per class; chains never cross a painted slice, whose labels are ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import SparseSegError
from .slice_registration import CoarseField, RegistrationCancelled, demons_field, demons_fields, field_transform


@dataclass(frozen=True)
class PropagationSettings:
    """Demons settings. ``smoothing`` is the field's Gaussian sd in pixels: larger = stiffer, smoother warps."""

    iterations: int = 50
    smoothing: float = 1.5
    image_smoothing: float = 0.0  # Gaussian sd (pixels) applied to the slices before registration
    levels: int = 1  # coarse-to-fine levels of each pair's registration (1: the full grid only)
    finest: int = 1  # the finest level's grid is this many times coarser than the slice (fields resampled up)


def _as_image(array: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))


class SliceRegistration:
    """Displacement fields between neighbouring slices of one normalised volume (slices along axis 0).

    ``transform(source, target)`` maps the target slice's pixels onto the source slice, which is what warping
    the source's label onto the target needs; fields are computed on demand and cached, since a gap between
    two painted slices uses each pair once per direction. :meth:`prefetch` registers the pairs a propagation
    will ask for up front, in ``workers`` processes (:func:`~.slice_registration.demons_fields`).
    """

    def __init__(self, volume: np.ndarray, settings: PropagationSettings, workers: int = 1) -> None:
        self.volume = volume
        self.settings = settings
        self.workers = max(1, int(workers))
        self._cache: dict[tuple[int, int], sitk.Transform | CoarseField | np.ndarray] = {}
        if settings.image_smoothing > 0:
            smoothed = sitk.SmoothingRecursiveGaussian(_as_image(volume), float(settings.image_smoothing))
            self.volume = sitk.GetArrayFromImage(smoothed)

    def prefetch(self, pairs: list[tuple[int, int]], should_stop: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """Register the ``(source, target)`` pairs not cached yet, several at a time when ``workers`` > 1, calling
        ``progress(done, total)`` as they finish (one process: one after the other, the same fields)."""
        missing = [pair for pair in dict.fromkeys(pairs) if pair not in self._cache]
        if not missing:
            return
        try:
            fields = demons_fields([(self.volume[target], self.volume[source]) for source, target in missing],
                                   self.settings.iterations, self.settings.smoothing, self.workers, should_stop,
                                   self.settings.levels, self.settings.finest, progress, keep_coarse=True)
        except RegistrationCancelled:
            from .trainer import TrainingCancelled

            raise TrainingCancelled() from None
        # kept as registered (a coarse field stays coarse: a CT's fields on its slices' grid hold a GiB) and made a
        # transform when first warped along
        self._cache.update(zip(missing, fields))

    def transform(self, source: int, target: int) -> sitk.Transform:
        key = (source, target)
        field = self._cache.get(key)
        if field is None:
            field = demons_field(self.volume[target], self.volume[source], self.settings.iterations,
                                 self.settings.smoothing, self.settings.levels, self.settings.finest)
        if not isinstance(field, sitk.Transform):
            field = self._cache[key] = field_transform(field)
        return field

    def forget(self, source: int, target: int) -> None:
        """Drop the cached field of the pair (it is registered again if asked for)."""
        self._cache.pop((source, target), None)

    def warp(self, maps: np.ndarray, source: int, target: int) -> np.ndarray:
        """Soft maps ``(C, j, i)`` of slice ``source`` warped onto slice ``target`` (linear, 0 outside)."""
        transform = self.transform(source, target)
        warped = []
        for channel in maps:
            image = _as_image(channel)
            warped.append(sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0)))
        return np.clip(np.stack(warped), 0.0, 1.0)


def demons_levels_for(spacing_kji: tuple[float, float, float]) -> int:
    """Coarse-to-fine levels for registering neighbouring slices ``spacing_kji[0]`` mm apart with pixels of
    ``spacing_kji[1:]`` mm: one (the full grid) when slices are less than twice as far apart as pixels, else one
    more level per doubling of that ratio, at most 3 (a quarter of the grid).

    An organ's outline moves between neighbouring slices by about the slice spacing, which on a thick-slice scan
    is several pixels: more than single-level demons, whose forces only see a few pixels, can follow. Each
    coarser level halves that displacement in pixels. Chosen on the interactive benchmark's left-atrium dev scans
    rewritten with 1.25, 2.5 and 5 mm slices (ratios 2, 4, 8; docs/results/interactive.md, "Twentieth
    session"); isotropic scans keep one level, on which the hippocampus dev scans lost with two."""
    ratio = float(spacing_kji[0]) / max(min(float(spacing_kji[1]), float(spacing_kji[2])), 1e-6)
    return 1 + min(2, int(np.floor(np.log2(ratio)))) if ratio >= 2.0 else 1


def registration_shrink(slice_shape: tuple[int, int], max_pixels: int) -> int:
    """The smallest power of two by which slices of ``slice_shape`` must be shrunk to hold at most ``max_pixels``
    pixels (1: as they are; ``max_pixels`` 0: never shrink). Demons' cost grows with a slice's pixels: the Start
    job's registration round took 391 s on a 512 x 512 x 300 scan whose object filled most of the slice, against
    about 50 s at 240 x 240 x 155 (docs/results/interactive.md, "Twenty-fourth session")."""
    factor, pixels = 1, int(slice_shape[0]) * int(slice_shape[1])
    while max_pixels > 0 and pixels > max_pixels * factor * factor:
        factor *= 2
    return factor


def one_hot_foreground(label_slice: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C - 1, j, i)`` float maps of classes 1..C-1."""
    return np.stack([(label_slice == value).astype(np.float32) for value in range(1, num_classes)])


def equivalent_radius_mm(label_slice: np.ndarray, spacing_kji: tuple[float, float, float]) -> float:
    """The radius (mm) of a disc with the area of ``label_slice``'s foreground (a slice along axis 0)."""
    return float(np.sqrt(float((label_slice > 0).sum()) * spacing_kji[1] * spacing_kji[2] / np.pi))


def inscribed_radius_mm(label_slice: np.ndarray, spacing_kji: tuple[float, float, float]) -> float:
    """The radius (mm) of the largest disc inside ``label_slice``'s foreground (a slice along axis 0): the
    object's thickness, which unlike its area does not grow with a thin, folded object's extent (a brain's
    cortex has a large area but is a few millimetres thick)."""
    foreground = label_slice > 0
    if not foreground.any():
        return 0.0
    return float(ndimage.distance_transform_edt(np.pad(foreground, 1), sampling=spacing_kji[1:]).max())


def open_end_reach(label_slice: np.ndarray, spacing_kji: tuple[float, float, float], scale: float) -> float:
    """How far (in slices) a chain beyond the outermost painted slice may carry the object: ``scale`` times the
    painted foreground's equivalent radius (the radius of a disc of its area, in mm) over the slice spacing.

    Registration alone cannot see where an object ends (past its end the chain keeps carrying the label over
    whatever tissue lies there), so an open end fades out at about the object's own in-plane size: a compact
    object (tumour, atrium, hippocampus) ends within about its radius. A longer object is reached by painting
    a slice further along; gaps between painted slices never fade."""
    return scale * equivalent_radius_mm(label_slice, spacing_kji) / max(spacing_kji[0], 1e-6)


def propagate_slices(
    volume: np.ndarray,
    label: np.ndarray,
    painted: list[int],
    num_classes: int,
    settings: PropagationSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
    registration: SliceRegistration | None = None,
    open_end_reach: Callable[[int], float] | None = None,
    empty_gap: str = "linear",
    end_shape: str = "cut",
    workers: int = 1,
    refine: Callable[[np.ndarray, int], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    known_reach: Callable[[int, int], int] | None = None,
) -> np.ndarray:
    """Class probabilities ``(C, k, j, i)`` of ``label``'s painted slices (indices along axis 0) propagated
    through the normalised ``volume``.

    Painted slices keep their labels exactly; a slice between two painted ones blends the two chains with weights
    falling linearly with distance; slices beyond the outermost painted ones take the single chain, faded by a
    Gaussian of the distance over ``open_end_reach(painted slice)`` slices when given (the foreground falls below
    one half at about 0.83 reach). Background is what the foreground classes leave. ``should_stop`` is polled
    once per slice (cancellation).

    ``empty_gap``: a gap whose far painted slice holds none of a class (the user painted a slice past the object's
    end) says only that the class ends somewhere in the gap, not where. ``"fade"`` treats that class's chain as an
    open end stopped at the empty slice (the empty slice's chain does not count for it); ``"linear"`` blends the
    two chains as for any gap, which halves the object at the gap's middle however close the end really is.

    ``end_shape``: how an open end fades. ``"cut"`` multiplies the chain by the Gaussian above, so whole slices
    drop out at about 0.83 reach while the slices before keep the painted size; ``"taper"`` shrinks each
    propagated slice towards its core so that its area follows an ellipsoid's, ``1 - (d / reach)^2`` of the
    carried area at ``d`` slices, gone at one reach (a compact object narrows towards its end).

    ``workers``: processes registering the neighbouring pairs up front when ``registration`` is not given
    (:meth:`SliceRegistration.prefetch`); the result does not depend on it.

    ``refine(maps, slice)``: applied to a chain's foreground maps on each slice it reaches, before they travel on
    (e.g. image evidence trimming what the warp carried over other tissue, so the error does not compound).

    ``progress(done, total)``: slice pairs registered so far, where ``registration`` registers them up front
    (:meth:`SliceRegistration.prefetch`), which is almost all of the time taken.

    ``known_reach(painted slice, direction)``: slices beyond it (-1 / +1) the object is known to go on (e.g. shown
    by a slice painted across another axis): an open end carries the object unfaded that far and fades over one
    slice after it, or as ``open_end_reach`` says where that reaches further.
    """
    if volume.shape != label.shape:
        raise SparseSegError(f"image {volume.shape} and label {label.shape} differ in shape",
                             "Give a label map on the image's grid.")
    depth = volume.shape[0]
    painted = sorted({int(p) for p in painted})
    if not painted or painted[0] < 0 or painted[-1] >= depth:
        raise SparseSegError(f"painted slices {painted} are not inside a volume of {depth} slices",
                             "Paint at least one slice of the volume.")
    own = registration is None  # a registration made here is this call's alone: each field goes once it is used
    registration = registration or SliceRegistration(volume, settings or PropagationSettings(), workers)
    if empty_gap not in ("fade", "linear"):
        raise SparseSegError(f"unknown empty_gap {empty_gap!r}", 'Use "fade" or "linear".')
    if end_shape not in ("cut", "taper"):
        raise SparseSegError(f"unknown end_shape {end_shape!r}", 'Use "cut" or "taper".')
    foreground = np.zeros((num_classes - 1,) + volume.shape, np.float32)
    total_weight = np.zeros((num_classes - 1, depth), np.float32)  # per class: a gap may close for one class only
    holds = {p: one_hot_foreground(label[p], num_classes).reshape(num_classes - 1, -1).any(1) for p in painted}
    if hasattr(registration, "prefetch"):
        registration.prefetch(chain_pairs(painted, depth), should_stop, progress)
    for index, start in enumerate(painted):
        foreground[:, start] = one_hot_foreground(label[start], num_classes)
        total_weight[:, start] = np.inf
        for direction in (-1, 1):
            neighbour = index + direction
            stop = painted[neighbour] if 0 <= neighbour < len(painted) else (-1 if direction < 0 else depth)
            span = abs(stop - start)
            open_end = stop in (-1, depth)
            # classes this chain carries alone up to an empty painted slice, and those it leaves to the other chain
            closing = not open_end and empty_gap == "fade"
            alone = holds[start] & ~holds[stop] if closing else np.zeros(num_classes - 1, bool)
            silent = ~holds[start] & holds[stop] if closing else np.zeros(num_classes - 1, bool)
            faded = open_end | alone
            reach = open_end_reach(start) if faded.any() and open_end_reach is not None else None
            known = known_reach(start, direction) if faded.any() and known_reach is not None else 0
            current = foreground[:, start].copy()
            position = start
            while position + direction != stop:
                if should_stop is not None and should_stop():
                    from .trainer import TrainingCancelled

                    raise TrainingCancelled()
                target = position + direction
                current = registration.warp(current, position, target)
                if own:  # every chain pair is warped along once (chain_pairs); a CT's fields hold a GiB
                    registration.forget(position, target)
                if refine is not None:
                    current = refine(current, target)
                # a gap filled from both ends: each chain counts by its closeness; open ends: the one chain
                linear = 1.0 if open_end else (span - abs(target - start)) / span
                weight = np.where(alone, 1.0, np.where(silent, 0.0, linear)).astype(np.float32)
                distance = abs(target - start)
                shown = _shown_strength(distance, known)
                if reach is not None and end_shape == "taper" and shown < 1.0:
                    fraction = max(1.0 - (distance / max(reach, 1e-6)) ** 2, shown)
                    carried = np.where(faded[:, None, None], taper(current, fraction), current)
                    foreground[:, target] += weight[:, None, None] * carried
                else:
                    fade = 1.0 if reach is None else float(np.exp(-(distance / max(reach, 1e-6)) ** 2))
                    fades = np.where(faded, max(fade, shown), 1.0).astype(np.float32)
                    foreground[:, target] += (weight * fades)[:, None, None] * current
                total_weight[:, target] += weight
                position = target
    open_slices = np.isfinite(total_weight) & (total_weight > 0)
    divisor = np.where(open_slices, total_weight, 1.0)
    foreground /= divisor[:, :, None, None]
    foreground = np.clip(foreground, 0.0, 1.0)
    total = foreground.sum(0)
    over = total > 1.0
    foreground[:, over] /= total[over]
    return np.concatenate([np.clip(1.0 - foreground.sum(0), 0.0, 1.0)[None], foreground])


def _shown_strength(distance: int, known: int) -> float:
    """How much of a chain's object a slice ``distance`` from its painted slice keeps because the object is known to
    reach ``known`` slices (0: nothing known): all of it up to there, then a fade over about one slice."""
    if not known:
        return 0.0
    return 1.0 if distance <= known else float(np.exp(-((distance - known) ** 2)))


def chain_pairs(painted: list[int], depth: int) -> list[tuple[int, int]]:
    """Every ``(source, target)`` pair of neighbouring slices that :func:`propagate_slices` warps along: from each
    painted slice outwards to the next painted slice or the volume's end."""
    pairs = []
    for index, start in enumerate(painted):
        for direction in (-1, 1):
            neighbour = index + direction
            stop = painted[neighbour] if 0 <= neighbour < len(painted) else (-1 if direction < 0 else depth)
            pairs.extend((position, position + direction) for position in range(start, stop - direction, direction))
    return pairs


def taper(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Soft maps ``(C, j, i)`` of one slice shrunk to about ``fraction`` of their object's area: the object (all
    classes together, probability >= 0.5) keeps its voxels deepest inside it (largest distance to its border; voxels
    tied in depth with the last one kept stay too), so it narrows towards its core the way a compact object narrows
    towards its end; classes keep their split."""
    from scipy import ndimage

    if fraction >= 1.0:
        return maps
    obj = maps.sum(0) >= 0.5
    keep = int(round(max(fraction, 0.0) * int(obj.sum())))
    if keep == 0:
        return np.zeros_like(maps)
    depth = ndimage.distance_transform_edt(obj)
    threshold = np.partition(depth[obj], obj.sum() - keep)[obj.sum() - keep]
    return maps * (depth >= threshold)[None].astype(maps.dtype)


def slice_distance(depth: int, painted: list[int]) -> np.ndarray:
    """Distance (in slices) of every slice along axis 0 to the nearest painted one."""
    positions = np.arange(depth)[:, None]
    return np.abs(positions - np.asarray(sorted(painted))[None]).min(1)
