"""Propagating a label from one slice to the next by deformable 2D registration (SimpleITK demons).

Neighbouring slices of a scan show the same anatomy, slightly moved and reshaped: registering slice
``s - 1`` onto slice ``s`` and warping its label gives a shape prior for ``s`` that follows the motion
(identity copying does not: a structure that drifts in-plane, like the hippocampal tail across axial
slices, is lost within a few slices). Used by self-labelling's ``continuity`` option.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class CoarseField:
    """A demons field kept on the coarse grid it was computed on (``finest`` > 1), with that grid's geometry in
    the slice's pixel units, until a warp needs it on the slice's own grid (:meth:`on_slice_grid`).

    Why: a propagation registers every neighbouring pair of the crop before the first warp, and on the slice's grid
    a 512 x 512 x 300 scan's fields hold 1.1 GiB (float64, two components per pixel); on a grid ``finest`` times
    coarser they hold ``finest`` squared times less. Resampled up by the same call as before, so the field a
    warp uses is the same, bit for bit."""
    array: np.ndarray  # (j', i', 2) on the coarse grid
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    shape: tuple[int, int]  # the slice's own (j, i)

    def on_slice_grid(self) -> np.ndarray:
        field = sitk.GetImageFromArray(self.array, isVector=True)
        field.SetSpacing(self.spacing)
        field.SetOrigin(self.origin)
        slice_grid = sitk.Image(int(self.shape[1]), int(self.shape[0]), sitk.sitkFloat32)
        return _on_grid(field, slice_grid)


def _on_grid(field: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``field`` linearly resampled onto ``reference``'s grid, nearest-neighbour beyond its own (no zero rim on
    odd grid sizes), as a float64 array."""
    resampled = sitk.Resample(field, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64, True)
    return sitk.GetArrayFromImage(sitk.Cast(resampled, sitk.sitkVectorFloat64))


def demons_field(fixed: np.ndarray, moving: np.ndarray, iterations: int = 50, smoothing: float = 1.5,
                 levels: int = 1, finest: int = 1, keep_coarse: bool = False) -> np.ndarray | CoarseField:
    """The displacement field ``(j, i, 2)`` (float64) mapping points of 2D slice ``fixed`` into ``moving``.

    Symmetric-forces demons: both are intensity-normalised slices of one scan, so a mean-squares metric fits; the
    field is smoothed with a Gaussian of ``smoothing`` pixels (of each level's grid) after every iteration. With
    ``levels`` > 1 the pair is registered coarse to fine (each level halves the grid, ``iterations`` at each), so a
    displacement of several pixels, as between slices far apart, is found on a grid where it is small; the
    finer level starts from the coarser field. ``finest`` > 1 stops on a grid that many times coarser than the
    slice and resamples the field onto the slice's grid: on a large slice (a CT's liver) the cost falls with the
    square of it, and an outline hundreds of pixels long loses little; ``keep_coarse`` returns it on that grid
    (:class:`CoarseField`). An array rather than a transform so that pairs can be registered in other processes
    (:func:`demons_fields`).
    """
    fixed_image = sitk.GetImageFromArray(np.ascontiguousarray(fixed, dtype=np.float32))
    moving_image = sitk.GetImageFromArray(np.ascontiguousarray(moving, dtype=np.float32))
    finest = max(1, int(finest))
    while finest > 1 and min(fixed.shape) // finest < 8:
        finest //= 2  # a grid this coarse holds nothing to register
    field = None
    for level in reversed(range(max(1, int(levels)))):
        factor = finest * 2 ** level
        if factor > 1 and min(fixed.shape) // factor < 8:
            continue  # a grid this coarse holds nothing to register
        level_fixed, level_moving = (_shrunk(fixed_image, factor), _shrunk(moving_image, factor)) if factor > 1 \
            else (fixed_image, moving_image)
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(int(iterations))
        demons.SetStandardDeviations(float(smoothing))
        if field is None:
            field = demons.Execute(level_fixed, level_moving)
        else:  # the coarser field (physical units: full-grid pixels) on this level's grid
            initial = sitk.Resample(field, level_fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64,
                                    True)  # nearest-neighbour extrapolation: no zero rim on odd grid sizes
            field = demons.Execute(level_fixed, level_moving, initial)
    if finest > 1 and keep_coarse:
        return CoarseField(sitk.GetArrayFromImage(field), field.GetSpacing(), field.GetOrigin(), tuple(fixed.shape))
    if finest > 1:  # onto the slice's own grid (physical units are already its pixels)
        return _on_grid(field, fixed_image)
    return sitk.GetArrayFromImage(sitk.Cast(field, sitk.sitkVectorFloat64))


def _shrunk(image: sitk.Image, factor: int) -> sitk.Image:
    """``image`` on a grid ``factor`` times coarser (Gaussian anti-aliasing first; physical extent kept)."""
    return sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, 0.5 * factor), [factor] * image.GetDimension())


def field_transform(field: np.ndarray | CoarseField) -> sitk.Transform:
    """The transform of a :func:`demons_field` result (on the slice's own grid: unit spacing, zero origin)."""
    if isinstance(field, CoarseField):
        field = field.on_slice_grid()
    return sitk.DisplacementFieldTransform(sitk.GetImageFromArray(field, isVector=True))


def slice_transform(fixed: np.ndarray, moving: np.ndarray, iterations: int = 50, smoothing: float = 1.5,
                    levels: int = 1, finest: int = 1) -> sitk.Transform:
    """The transform mapping points of 2D slice ``fixed`` into ``moving`` (:func:`demons_field`)."""
    return field_transform(demons_field(fixed, moving, iterations, smoothing, levels, finest))


def _one_itk_thread() -> None:
    """In a registration process: one ITK thread each, the processes being the parallelism."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


class RegistrationCancelled(Exception):
    """``should_stop`` said stop while pairs were being registered."""


def demons_fields(pairs: Sequence[tuple[np.ndarray, np.ndarray]], iterations: int, smoothing: float, workers: int,
                  should_stop: Callable[[], bool] | None = None, levels: int = 1,
                  finest: int = 1, progress: Callable[[int, int], None] | None = None,
                  keep_coarse: bool = False) -> list[np.ndarray | CoarseField]:
    """:func:`demons_field` of every ``(fixed, moving)`` pair, in ``workers`` processes when that pays.

    The pairs of a volume are independent (only the warping of a label along them is a chain), and ITK's own
    threads stop paying after a few on slices this small (the Start job's registration round of a 240x240x155
    scan: 65 s with 2 threads, 46 s with 16), so separate processes are how a many-core machine can shorten it
    (``python -m SparseSegLib.benchmarks.registration_speed`` measures both on the machine at hand). Processes are spawned (no fork of a process that
    holds torch threads or a CUDA context); the fields are the same as in one process, bit for bit.
    ``should_stop`` is polled while waiting; it cancels the pairs not yet started and raises
    :class:`RegistrationCancelled`. ``progress(done, total)`` is called as pairs finish (the registration round
    is the wait before a user's first result: tens of seconds to minutes).
    """
    workers = max(1, min(int(workers), len(pairs)))
    if workers == 1 or len(pairs) < 4:
        fields = []
        for fixed, moving in pairs:
            if should_stop is not None and should_stop():
                raise RegistrationCancelled()
            fields.append(demons_field(fixed, moving, iterations, smoothing, levels, finest, keep_coarse))
            if progress is not None:
                progress(len(fields), len(pairs))
        return fields
    results: list[np.ndarray | CoarseField | None] = [None] * len(pairs)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_itk_thread) as pool:
        futures = {pool.submit(demons_field, fixed, moving, iterations, smoothing, levels, finest, keep_coarse): index
                   for index, (fixed, moving) in enumerate(pairs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                results[futures[future]] = future.result()
            if done and progress is not None:
                progress(len(pairs) - len(pending), len(pairs))
            if pending and should_stop is not None and should_stop():
                pool.shutdown(wait=False, cancel_futures=True)
                raise RegistrationCancelled()
    return results  # type: ignore[return-value]


def warp_label(label: np.ndarray, transform: sitk.Transform) -> np.ndarray:
    """``label`` (2D, ints; negative = unknown) resampled through ``transform`` (nearest neighbour, unknown outside)."""
    moving = sitk.GetImageFromArray(np.ascontiguousarray(label, dtype=np.int16))
    warped = sitk.Resample(moving, moving, transform, sitk.sitkNearestNeighbor, -1, sitk.sitkInt16)
    return sitk.GetArrayFromImage(warped)
