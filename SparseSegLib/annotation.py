"""Seeded, reproducible simulation of sparse annotation from full label maps.

Benchmarks start from fully labelled volumes and hide most of the labels: an *annotation spec* says
which voxels a user would have annotated, and :func:`simulate_annotation` turns it into a boolean
*annotated mask* (see :class:`~SparseSegLib.case.Case`). Every voxel of an annotated slice or box is
annotated, background included: a user who paints a slice also states that the unpainted part of that
slice is background.

Spec grammar (case-insensitive)::

    central-slice            the middle slice of the volume along axis 0 (k)
    central-slice:AXIS       ... along AXIS
    slices:N                 N evenly spaced slices through the object's extent along axis 0 (k)
    slices:N:AXIS            ... along AXIS
    boxes:N:SIZE             N random non-overlapping cubes of SIZE voxels per side
    boxes:N:AxBxC            ... boxes of A x B x C voxels, in array order (k, j, i)
    full                     every voxel annotated (the fully supervised reference)
    painted                  the label maps hold a user's own paint, not full labels: every slice holding paint
                             is annotated whole, along the axis with the fewest painted slices, as the Slicer
                             module's Start reads painted slices (``painted:AXIS`` names the axis)

``AXIS`` is an axis of the array in SimpleITK numpy order ``(k, j, i)``: ``0`` or ``k`` is the
slice stack (the image's third voxel index: nibabel axis 2, SimpleITK numpy axis 0, "axial" for an
axially acquired scan), ``1`` or ``j`` the rows and ``2`` or ``i`` the columns. The default is 0.

* ``central-slice`` follows the incremental self-labelling paper: slice ``floor(depth / 2)`` of the
  *volume* along the axis, wherever the object is (it may hold no foreground at all).
* ``slices:N`` places the slices in the object's extent: the slices ``first..last`` along the axis
  whose label has foreground, ``L = last - first + 1`` slices long. The extent is cut into ``N`` equal
  bins and the slice at the centre of each bin is annotated: ``floor(first + L * (2m + 1) / (2N))``
  for ``m = 0..N-1``. So ``N = 1`` gives the central slice of the extent (by the same ``floor`` rule as
  ``central-slice``), the slices are distinct and never further than half a bin from either end.
* ``boxes:N:SIZE`` follows the 3D Gradual Learning paper: ``N`` boxes placed uniformly at random
  inside the volume (corners drawn with a seeded :class:`numpy.random.Generator`), rejection-sampled
  so that no two overlap (touching is allowed).

Randomness only enters through ``seed``: the same label, spec and seed always give the same mask.
:func:`annotate_case` derives a per-case seed from ``(seed, case_id)`` with :func:`zlib.crc32`, so that
cases get different boxes under one global seed, identically on every run and machine.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from .case import Case
from .errors import SparseSegError
from .jobs.regions import slices_mask

KINDS = ("central-slice", "slices", "boxes", "full", "painted")

#: ``AnnotationSpec.axis`` of ``painted`` without an axis: the axis is read from the paint (fewest painted slices).
AUTO_AXIS = -1

#: Axis names accepted in specs, mapped to array axes in ``(k, j, i)`` order.
AXIS_NAMES = {"0": 0, "1": 1, "2": 2, "k": 0, "j": 1, "i": 2}

SPEC_FORMS = (
    "Valid annotation specs: 'central-slice', 'central-slice:AXIS', 'slices:N', 'slices:N:AXIS', "
    "'boxes:N:SIZE', 'boxes:N:AxBxC', 'full' or, for label maps that hold only your own painted slices, "
    "'painted' / 'painted:AXIS' (AXIS = 0/k, 1/j or 2/i in array order; default 0 = k, the slice stack; painted: "
    "the axis with the fewest painted slices). E.g. central-slice, slices:3, boxes:5:16, painted."
)

#: How often box placement starts over, and how many random corners each box may try per start.
_BOX_RESTARTS = 50
_BOX_TRIES = 200


@dataclass(frozen=True)
class AnnotationSpec:
    """Which voxels a simulated user annotates; build it with :func:`parse_annotation_spec`.

    ``axis`` (array order, 0 = k) matters for the slice kinds, ``count`` is the number of slices or
    boxes (1 for ``central-slice``, 0 for ``full``) and ``size`` the box edge: an int for cubes or a
    ``(k, j, i)`` tuple (0 when not boxes).
    """

    kind: str
    axis: int = 0
    count: int = 1
    size: int | tuple[int, int, int] = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SparseSegError(f"unknown annotation kind {self.kind!r}", SPEC_FORMS)
        if self.kind in ("slices", "boxes") and self.count <= 0:
            raise SparseSegError(f"annotation spec {self}: the number of {self.kind} must be positive", SPEC_FORMS)
        if self.kind == "boxes" and min(self.box_shape) <= 0:
            raise SparseSegError(f"annotation spec {self}: the box size must be positive", SPEC_FORMS)

    @property
    def box_shape(self) -> tuple[int, int, int]:
        """The box edge lengths in array order ``(k, j, i)``."""
        if isinstance(self.size, tuple):
            return tuple(int(s) for s in self.size)  # type: ignore[return-value]
        return (int(self.size),) * 3

    def __str__(self) -> str:
        """The canonical spec string, which parses back to an equal spec."""
        if self.kind == "full":
            return "full"
        if self.kind == "painted":
            return "painted" if self.axis == AUTO_AXIS else f"painted:{self.axis}"
        if self.kind == "central-slice":
            return f"central-slice:{self.axis}"
        if self.kind == "slices":
            return f"slices:{self.count}:{self.axis}"
        size = "x".join(str(s) for s in self.size) if isinstance(self.size, tuple) else str(self.size)
        return f"boxes:{self.count}:{size}"


def parse_annotation_spec(spec: str | AnnotationSpec) -> AnnotationSpec:
    """Parse a spec string such as ``central-slice``, ``slices:3:k`` or ``boxes:5:16`` (see module doc)."""
    if isinstance(spec, AnnotationSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise SparseSegError(f"empty or invalid annotation spec {spec!r}", SPEC_FORMS)
    text = spec.strip().lower()
    kind, *args = [part.strip() for part in text.split(":")]
    if kind == "full":
        _expect_args(spec, args, 0, 0)
        return AnnotationSpec("full", axis=0, count=0, size=0)
    if kind == "painted":
        _expect_args(spec, args, 0, 1)
        return AnnotationSpec("painted", axis=_parse_axis(spec, args[0]) if args else AUTO_AXIS, count=0)
    if kind == "central-slice":
        _expect_args(spec, args, 0, 1)
        return AnnotationSpec("central-slice", axis=_parse_axis(spec, args[0]) if args else 0, count=1)
    if kind == "slices":
        _expect_args(spec, args, 1, 2)
        count = _parse_positive(spec, args[0], "number of slices N")
        axis = _parse_axis(spec, args[1]) if len(args) > 1 else 0
        return AnnotationSpec("slices", axis=axis, count=count)
    if kind == "boxes":
        _expect_args(spec, args, 2, 2)
        count = _parse_positive(spec, args[0], "number of boxes N")
        return AnnotationSpec("boxes", axis=0, count=count, size=_parse_size(spec, args[1]))
    raise SparseSegError(f"unknown annotation kind {kind!r} in spec {spec!r}", SPEC_FORMS)


def _expect_args(spec: str, args: list[str], least: int, most: int) -> None:
    if not least <= len(args) <= most:
        wanted = str(least) if least == most else f"{least} to {most}"
        raise SparseSegError(
            f"annotation spec {spec!r} has {len(args)} field(s) after the kind; {wanted} expected", SPEC_FORMS
        )


def _parse_positive(spec: str, text: str, what: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise SparseSegError(f"annotation spec {spec!r}: {what} {text!r} is not a whole number", SPEC_FORMS)
    value = int(text)
    if value <= 0:
        raise SparseSegError(f"annotation spec {spec!r}: {what} must be positive, not {value}", SPEC_FORMS)
    return value


def _parse_axis(spec: str, text: str) -> int:
    if text not in AXIS_NAMES:
        raise SparseSegError(
            f"annotation spec {spec!r}: axis {text!r} is not an axis of a 3D volume", SPEC_FORMS
        )
    return AXIS_NAMES[text]


def _parse_size(spec: str, text: str) -> int | tuple[int, int, int]:
    parts = text.split("x")
    if len(parts) == 1:
        return _parse_positive(spec, parts[0], "box size")
    if len(parts) != 3:
        raise SparseSegError(f"annotation spec {spec!r}: box size {text!r} must be SIZE or AxBxC", SPEC_FORMS)
    return tuple(_parse_positive(spec, part, "box size") for part in parts)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Simulation


def simulate_annotation(label: np.ndarray, spec: AnnotationSpec | str, seed: int = 0) -> np.ndarray:
    """The boolean annotated mask a user following ``spec`` would produce on ``label`` (``(k, j, i)``).

    Raises :class:`SparseSegError` when the spec does not fit the volume (an axis it lacks, more
    slices than it has, boxes larger than it or too many to fit without overlap) and for ``slices:N``
    when the label map has no foreground (no object extent to place the slices in).
    """
    spec = parse_annotation_spec(spec)
    label = np.asarray(label)
    if label.ndim != 3:
        raise SparseSegError(
            f"cannot simulate annotation on a {label.ndim}D label map of shape {label.shape}",
            "Give a 3D label map in (k, j, i) order.",
        )
    annotated = np.zeros(label.shape, dtype=bool)
    if spec.kind == "full":
        annotated[...] = True
        return annotated
    if spec.kind == "painted":  # the module's rule: a model trained on painted label maps learns what Start uses
        try:
            return slices_mask(label, "auto" if spec.axis == AUTO_AXIS else spec.axis)[0]
        except SparseSegError as error:
            raise SparseSegError(error.message, "With --annotation painted every label map needs a painted slice; "
                                                "leave unpainted scans out (--cases).") from None
    if spec.kind in ("central-slice", "slices"):
        _check_axis(spec.axis, label.shape, spec)
        if spec.kind == "central-slice":
            positions = [label.shape[spec.axis] // 2]
        else:
            positions = extent_slices(label, spec.count, spec.axis)
        index = [slice(None)] * 3
        index[spec.axis] = positions
        annotated[tuple(index)] = True
        return annotated
    for corner in place_boxes(label.shape, spec, seed):
        annotated[tuple(slice(c, c + s) for c, s in zip(corner, spec.box_shape))] = True
    return annotated


def _check_axis(axis: int, shape: tuple[int, ...], spec: AnnotationSpec | str) -> None:
    if not isinstance(axis, (int, np.integer)) or not 0 <= axis < len(shape):
        raise SparseSegError(
            f"annotation spec {spec}: axis {axis} is outside the volume, which has axes 0..{len(shape) - 1} "
            f"(shape {tuple(shape)})",
            "Use axis 0 (k, the slice stack), 1 (j) or 2 (i).",
        )


def object_extent(label: np.ndarray, axis: int = 0) -> tuple[int, int]:
    """``(first, last)``: the first and last slice along ``axis`` whose label has foreground."""
    label = np.asarray(label)
    _check_axis(axis, label.shape, f"extent along axis {axis}")
    other = tuple(a for a in range(label.ndim) if a != axis)
    occupied = np.flatnonzero(np.any(label > 0, axis=other))
    if occupied.size == 0:
        raise SparseSegError(
            "the label map has no foreground, so there is no object extent to place slices in",
            "Use 'central-slice' or 'boxes:N:SIZE' for this case, or check that the right label file was given.",
        )
    return int(occupied[0]), int(occupied[-1])


def extent_slices(label: np.ndarray, count: int, axis: int = 0) -> list[int]:
    """``count`` evenly spaced slice indices through the object's extent along ``axis``.

    The extent of ``L`` slices is cut into ``count`` equal bins and each bin's central slice is taken:
    ``floor(first + L * (2m + 1) / (2 * count))``; ``count = 1`` is the central slice of the extent.
    """
    label = np.asarray(label)
    _check_axis(axis, label.shape, f"slices:{count}:{axis}")
    depth = label.shape[axis]
    if count > depth:
        raise SparseSegError(
            f"annotation spec slices:{count}:{axis} asks for {count} slices but the volume has only {depth} "
            f"along axis {axis} (shape {label.shape})",
            f"Ask for at most {depth} slices, or use 'full'.",
        )
    first, last = object_extent(label, axis)
    length = last - first + 1
    if count > length:
        raise SparseSegError(
            f"annotation spec slices:{count}:{axis} asks for {count} slices but the object spans only {length} "
            f"slice(s) ({first}..{last}) along axis {axis}",
            f"Ask for at most {length} slices for this case, or use 'full'.",
        )
    return [first + (length * (2 * m + 1)) // (2 * count) for m in range(count)]


def place_boxes(shape: tuple[int, ...], spec: AnnotationSpec | str, seed: int = 0) -> list[tuple[int, int, int]]:
    """Corners (lowest ``(k, j, i)`` index) of ``spec.count`` non-overlapping boxes inside ``shape``.

    Corners are drawn uniformly from the positions where the whole box fits; a corner that makes its
    box overlap an earlier one is rejected and redrawn, and after too many rejections the placement
    starts over. Raises :class:`SparseSegError` when the boxes are larger than the volume or do not fit.
    """
    spec = parse_annotation_spec(spec)
    if spec.kind != "boxes":
        raise SparseSegError(f"annotation spec {spec} does not describe boxes", "Use boxes:N:SIZE.")
    if len(shape) != 3:
        raise SparseSegError(f"cannot place 3D boxes in a volume of shape {tuple(shape)}", "Give a 3D volume.")
    box = spec.box_shape
    if any(b > s for b, s in zip(box, shape)):
        raise SparseSegError(
            f"annotation spec {spec}: boxes of {'x'.join(map(str, box))} voxels are larger than the volume "
            f"{'x'.join(map(str, shape))} (k x j x i)",
            "Use a smaller box size (boxes:N:SIZE, SIZE in voxels per side).",
        )
    too_many = SparseSegError(
        f"annotation spec {spec}: {spec.count} non-overlapping boxes of {'x'.join(map(str, box))} voxels "
        f"do not fit in the volume {'x'.join(map(str, shape))} (k x j x i)",
        "Use fewer or smaller boxes.",
    )
    if spec.count * int(np.prod(box)) > int(np.prod(shape)):
        raise too_many
    rng = np.random.default_rng(seed)
    high = np.asarray(shape) - np.asarray(box) + 1  # exclusive upper bound of a corner
    for _ in range(_BOX_RESTARTS):
        corners: list[np.ndarray] = []
        for _ in range(spec.count):
            for _ in range(_BOX_TRIES):
                corner = rng.integers(0, high)
                # Two boxes overlap when their intervals overlap along every axis.
                if all(np.any(np.abs(corner - other) >= box) for other in corners):
                    corners.append(corner)
                    break
            else:
                break
        if len(corners) == spec.count:
            return [tuple(int(c) for c in corner) for corner in corners]  # type: ignore[misc]
    raise too_many


# --------------------------------------------------------------------------------------------------
# Cases, checks and queries


def case_seed(seed: int, case_id: str) -> int:
    """A per-case seed derived from the global ``seed`` and ``case_id``, stable across runs and machines."""
    return zlib.crc32(f"{int(seed)}:{case_id}".encode("utf-8"))


def annotate_case(case: Case, spec: AnnotationSpec | str, seed: int = 0) -> Case:
    """A copy of ``case`` annotated as ``spec`` says, with a per-case seed from ``(seed, case_id)``."""
    if case.label is None:
        raise SparseSegError(
            f"{case.case_id}: no label map to simulate an annotation from", "Give a label file for this case."
        )
    try:
        annotated = simulate_annotation(case.label, spec, seed=case_seed(seed, case.case_id))
    except SparseSegError as error:
        raise SparseSegError(f"{case.case_id}: {error.message}", error.hint) from None
    return case.with_annotation(annotated)


@dataclass(frozen=True)
class AnnotationSummary:
    """How much of a volume an annotated mask covers, and which classes it shows."""

    annotated_voxels: int
    total_voxels: int
    fraction: float
    #: Foreground voxels of each class present inside the annotation (classes absent there are left out).
    foreground_per_class: dict[int, int] = field(default_factory=dict)

    @property
    def foreground_voxels(self) -> int:
        """Annotated voxels of any foreground class."""
        return sum(self.foreground_per_class.values())

    def as_dict(self) -> dict:
        """Plain JSON-ready values (for reports and worker events)."""
        return {
            "annotated_voxels": self.annotated_voxels,
            "total_voxels": self.total_voxels,
            "fraction": self.fraction,
            "foreground_voxels": self.foreground_voxels,
            "foreground_per_class": dict(self.foreground_per_class),
        }

    def __getitem__(self, key: str):
        """Mapping-style access, ``summary["fraction"]``, as for a dict of the same fields."""
        values = self.as_dict()
        if key not in values:
            raise KeyError(key)
        return values[key]


def check_annotation(label: np.ndarray | None, annotated: np.ndarray) -> AnnotationSummary:
    """Summarise an annotated mask; raises :class:`SparseSegError` for an empty annotation.

    An annotation whose voxels are all background is accepted (it still teaches what background
    looks like); one with no annotated voxel at all is not.
    """
    annotated = np.asarray(annotated, dtype=bool)
    if label is not None and np.shape(label) != annotated.shape:
        raise SparseSegError(
            f"annotated mask shape {annotated.shape} differs from label map shape {np.shape(label)}",
            "The annotated mask must be on the label map's voxel grid.",
        )
    count = int(np.count_nonzero(annotated))
    if count == 0:
        raise SparseSegError(
            "empty annotation: no voxel is annotated",
            "Paint at least one slice (or box) of the volume, or choose an annotation spec that covers it, "
            "e.g. central-slice.",
        )
    per_class: dict[int, int] = {}
    if label is not None:
        values, counts = np.unique(np.asarray(label)[annotated], return_counts=True)
        per_class = {int(v): int(c) for v, c in zip(values, counts) if v > 0}
    return AnnotationSummary(
        annotated_voxels=count,
        total_voxels=int(annotated.size),
        fraction=count / annotated.size,
        foreground_per_class=per_class,
    )


def annotated_slices(annotated: np.ndarray, axis: int = 0) -> list[int]:
    """Indices of the slices along ``axis`` that carry any annotation ("every slice that carries paint")."""
    annotated = np.asarray(annotated, dtype=bool)
    _check_axis(axis, annotated.shape, f"annotated slices along axis {axis}")
    other = tuple(a for a in range(annotated.ndim) if a != axis)
    return [int(s) for s in np.flatnonzero(np.any(annotated, axis=other))]
