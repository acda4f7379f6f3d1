"""The central data model: a case is an image, its geometry, a label map and an *annotated mask*.

Arrays use SimpleITK's numpy order ``(k, j, i)``: axis 0 is the slice stack (the image's third voxel
index, nibabel's axis 2), so "slice ``s``" of a volume is ``array[s]``. Geometry is kept in ITK/LPS
terms (spacing, origin and direction in the image's ``(i, j, k)`` order), exactly as SimpleITK reads
it, so that every file we write lands on the voxels it was read from.

The annotated mask says which voxels carry ground truth. Voxels outside it are *unknown*, not
background: a sparse annotation of one slice says nothing about the other slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import SparseSegError

#: Tolerance for comparing spacing/origin/direction read from different files (float32 headers).
GEOMETRY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of a 3D image lie in physical (LPS) space.

    ``size``, ``spacing`` and ``origin`` are in ``(i, j, k)`` order, ``direction`` is the row-major
    3x3 matrix whose columns are the physical directions of i, j and k (SimpleITK's convention).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The numpy shape ``(k, j, i)`` of arrays in this geometry."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def spacing_kji(self) -> tuple[float, float, float]:
        """Spacing in array-axis order, what metrics in mm need."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    def ijk_to_lps(self) -> np.ndarray:
        """The 4x4 homogeneous matrix mapping voxel indices (i, j, k) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """The same mapping in RAS, the convention of 3D Slicer (RAS = diag(-1, -1, 1) LPS)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps()

    @classmethod
    def from_ijk_to_lps(cls, matrix: np.ndarray, size: tuple[int, int, int]) -> Geometry:
        """Inverse of :meth:`ijk_to_lps`: split a 4x4 matrix into spacing, direction and origin."""
        linear = np.asarray(matrix, dtype=float)[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        direction = linear / spacing
        return cls(
            size=tuple(int(s) for s in size),
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in np.asarray(matrix)[:3, 3]),
            direction=tuple(float(d) for d in direction.ravel()),
        )

    def matches(self, other: Geometry, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
        """True when both describe the same voxel grid (up to header float precision)."""
        return self.size == other.size and all(
            np.allclose(a, b, atol=tolerance * max(1.0, float(np.max(np.abs(a)))))
            for a, b in (
                (self.spacing, other.spacing),
                (self.origin, other.origin),
                (self.direction, other.direction),
            )
        )

    def describe_difference(self, other: Geometry) -> str:
        """A short human-readable account of how two geometries differ."""
        parts = []
        for name in ("size", "spacing", "origin", "direction"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "size":
                if mine != theirs:
                    parts.append(f"size {mine} vs {theirs}")
            elif not np.allclose(mine, theirs, atol=GEOMETRY_TOLERANCE):
                parts.append(f"{name} {_fmt(mine)} vs {_fmt(theirs)}")
        return ", ".join(parts) or "identical"


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


@dataclass
class Case:
    """One volume with its (possibly sparse) annotation.

    ``label`` holds class indices (0 = background); ``annotated`` is True where ``label`` is ground
    truth. Both may be None for an image to be segmented. ``class_names`` maps label values to names
    (background excluded); ``class_colors`` maps them to RGB triples in [0, 1].
    """

    case_id: str
    image: np.ndarray
    geometry: Geometry
    label: np.ndarray | None = None
    annotated: np.ndarray | None = None
    class_names: dict[int, str] = field(default_factory=dict)
    class_colors: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.shape != self.geometry.shape:
            raise SparseSegError(
                f"{self.case_id}: image array shape {self.image.shape} does not match its geometry "
                f"{self.geometry.shape}",
                "Build the Geometry from the same file as the array.",
            )
        for name in ("label", "annotated"):
            array = getattr(self, name)
            if array is not None and array.shape != self.image.shape:
                raise SparseSegError(
                    f"{self.case_id}: {name} shape {array.shape} differs from image shape {self.image.shape}",
                    "The label map and annotated mask must be on the image's voxel grid.",
                )

    @property
    def num_classes(self) -> int:
        """Number of output channels a network needs, background included."""
        largest = max(self.class_names, default=0)
        if self.label is not None and self.label.size:
            largest = max(largest, int(self.label.max()))
        return largest + 1

    def with_annotation(self, annotated: np.ndarray) -> Case:
        """A copy of this case whose ground truth is restricted to ``annotated``.

        The label map is kept whole (benchmarks score against it); methods must only ever read it
        where ``annotated`` is True, which :func:`sparse_label` enforces.
        """
        if self.label is None:
            raise SparseSegError(f"{self.case_id}: no label map to annotate", "Give a label file for this case.")
        return replace(self, annotated=np.asarray(annotated, dtype=bool))

    def sparse_label(self, unknown: int = -1) -> np.ndarray:
        """The label map as a method may see it: ground truth where annotated, ``unknown`` elsewhere."""
        if self.label is None:
            raise SparseSegError(f"{self.case_id}: no label map", "Give a label file for this case.")
        mask = np.ones(self.label.shape, bool) if self.annotated is None else self.annotated
        sparse = np.full(self.label.shape, unknown, dtype=np.int16)
        sparse[mask] = self.label[mask]
        return sparse


def paint_digest(case: Case) -> str:
    """A fingerprint of what the user painted: which voxels are annotated and their labels (not the image).

    Why: a job resumed with the same paint goes on with the stage it was running, while new or changed paint (a
    Continue) starts a new stage; counting annotated voxels would miss a slice repainted with other labels."""
    import hashlib

    annotated = (np.ones(case.image.shape, bool) if case.annotated is None
                 else np.asarray(case.annotated, dtype=bool))
    digest = hashlib.sha1(repr(annotated.shape).encode())
    digest.update(np.packbits(annotated).tobytes())
    if case.label is not None:
        digest.update(np.asarray(case.label)[annotated].astype(np.int16).tobytes())
    return digest.hexdigest()
