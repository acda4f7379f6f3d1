"""One scan as the ``propagate`` method sees it: painted slices along axis 0, cropped to where the object can be.

Slices painted across another axis too (a user who corrects in another view) stay annotated voxels: ground truth
for the networks and the result, and evidence of how far the object reaches along the propagation
(:meth:`PaintedVolume.known_reach`); the registration propagates the slices of one axis, the one painted most."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...case import Case
from ...engine.preprocessing import normalize
from ...engine.propagation import equivalent_radius_mm, inscribed_radius_mm
from ...errors import SparseSegError
from ...jobs.regions import propagation_axis
from .settings import PropagateSettings


@dataclass
class PaintedVolume:
    """The case moved so that its painted slices run along axis 0 and cropped in-plane around the paint.

    ``axis`` is the array axis the user painted along (None: ROI boxes or scattered voxels, which have no
    slices to propagate from); ``window`` the in-plane crop (two slices of the moved array). Whole slices painted
    across other axes as well are ``cross`` annotated voxels (:func:`~SparseSegLib.jobs.regions.propagation_axis` says which axis leads).
    """

    axis: int | None
    painted: list[int]
    image: np.ndarray  # normalised, moved, cropped
    label: np.ndarray  # ground truth (moved, cropped); meaningful where ``annotated``
    annotated: np.ndarray
    window: tuple[slice, slice]
    full_shape: tuple[int, int, int]  # the moved, uncropped shape
    spacing: tuple[float, float, float]  # mm per voxel of the moved grid, the painted axis first

    @classmethod
    def from_case(cls, case: Case, settings: PropagateSettings) -> PaintedVolume:
        if case.annotated is None or case.label is None:
            raise SparseSegError(f"case {case.case_id} has no annotation", "Paint at least one slice of the object.")
        annotated = np.asarray(case.annotated, dtype=bool)
        axis = propagation_axis(annotated, case.label)
        moved_axis = 0 if axis is None else axis
        label = np.moveaxis(np.where(annotated, case.label, 0), moved_axis, 0)
        mask = np.moveaxis(annotated, moved_axis, 0)
        image = np.moveaxis(np.asarray(case.image, dtype=np.float32), moved_axis, 0)
        painted = [int(s) for s in np.flatnonzero(mask.all(axis=(1, 2)))] if axis is not None else []
        foreground = label > 0
        if not foreground.any():
            raise SparseSegError(f"case {case.case_id}: the annotation holds no foreground",
                                 "Paint the object (not only background) on at least one slice.")
        window = _window(foreground.any(0), settings)
        crop = (slice(None),) + window
        kji = tuple(float(s) for s in case.geometry.spacing_kji)
        spacing = (kji[moved_axis],) + tuple(kji[a] for a in range(3) if a != moved_axis)
        return cls(axis=axis, painted=painted, image=normalize(image[crop], "zscore"), label=label[crop],
                   annotated=mask[crop], window=window, full_shape=image.shape, spacing=spacing)

    @property
    def cross(self) -> np.ndarray:
        """Annotated voxels outside the painted slices: slices painted across another axis (or none)."""
        cross = self.annotated.copy()
        cross[self.painted] = False
        return cross

    @cached_property
    def has_cross(self) -> bool:
        """Whether slices across another axis were painted too (the painted slices are annotated whole, so any
        annotated voxel beyond them is one), without a copy of the mask."""
        return int(np.count_nonzero(self.annotated)) > len(self.painted) * self.annotated[0].size

    @cached_property
    def cross_shown(self) -> np.ndarray:
        """The slices (along axis 0) where a slice painted across another axis shows the object."""
        return np.flatnonzero((self.cross & (self.label > 0)).any(axis=(1, 2)))

    def known_reach(self, start: int, direction: int) -> int:
        """How many slices from painted slice ``start`` towards ``direction`` (-1 / +1) the object is known to go
        on: the farthest slice where a cross-painted slice shows it (0: none shows it). Registration cannot see
        where an object ends; a slice painted across the object's length can."""
        beyond = (self.cross_shown - start) * direction
        return int(beyond.max()) if beyond.size and beyond.max() > 0 else 0

    @property
    def painted_foreground(self) -> np.ndarray:
        return self.annotated & (self.label > 0)

    @property
    def painted_background(self) -> np.ndarray:
        return self.annotated & (self.label == 0)

    def largest_painted_radius_mm(self) -> float:
        """The largest painted slice's equivalent radius (mm): the object's in-plane size as the user painted it."""
        return max((equivalent_radius_mm(self.label[index], self.spacing) for index in self.painted), default=0.0)

    def largest_painted_thickness_mm(self) -> float:
        """The largest inscribed radius (mm) over the painted slices: how thick the object is where painted."""
        return max((inscribed_radius_mm(self.label[index], self.spacing) for index in self.painted), default=0.0)

    def to_case_grid(self, cropped: np.ndarray, fill: float = 0) -> np.ndarray:
        """A cropped ``(..., k, j, i)`` array put back on the case's own grid (``fill`` outside the crop)."""
        lead = cropped.shape[:-3]
        full = np.full(lead + self.full_shape, fill, dtype=cropped.dtype)
        full[(Ellipsis, slice(None)) + self.window] = cropped
        moved_axis = 0 if self.axis is None else self.axis
        return np.ascontiguousarray(np.moveaxis(full, len(lead), len(lead) + moved_axis))


def class_count(case: Case) -> int:
    """Classes the networks predict (background included): the case's names, or more when the paint holds
    higher label values than it names (one place, so a job and its saved model agree)."""
    painted = case.label[case.annotated] if case.annotated is not None and case.label is not None else case.label
    largest = int(painted.max()) if painted is not None and painted.size else 1
    return max(int(case.num_classes), largest + 1)


def _window(footprint: np.ndarray, settings: PropagateSettings) -> tuple[slice, slice]:
    """The painted foreground's in-plane bounding box grown by ``crop_margin`` of its size (at least
    ``min_margin`` pixels) on each side, clipped to the slice."""
    window = []
    for axis in range(2):
        present = np.flatnonzero(footprint.any(axis=1 - axis))
        first, last = int(present[0]), int(present[-1]) + 1
        margin = max(settings.min_margin, int(np.ceil(settings.crop_margin * (last - first))))
        window.append(slice(max(0, first - margin), min(footprint.shape[axis], last + margin)))
    return tuple(window)
