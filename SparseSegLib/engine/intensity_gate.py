"""The painted slices' intensities as evidence for a propagated object (a likelihood-ratio gate), for any method
that carries painted slices through a volume (the single-scan default, the collaborative registration branch).

Why: a slice-to-slice registration carries the painted outline over whatever lies next to the object where the
image shows no edge to stop it (the left atrium keeps its painted width where it narrows; past an object's end the
label travels over other tissue). The painted slices say what the object and its surroundings look like, so each
propagated voxel's probability (the prior) is updated by Bayes' rule with the likelihood of its intensity under
the object's and the background's histograms from the painted slices:

    P(object | intensity) = p L_obj / (p L_obj + (1 - p) L_bg)

A voxel the registration never reached (p = 0) stays background, so the gate cannot create far blobs; it removes
what does not look like the painted object and keeps, or adds at the uncertain rim, what does. Inside a chain
(:meth:`IntensityEvidence.trim`) the update only trims: a rim voxel raised there would travel on and be raised again, which
flooded the left atrium's bright neighbours on the dev scans (docs/results/interactive.md, "Eighth session").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Histogram bins (equal-count over the painted voxels): fine enough for a bright/dark split, coarse enough that
#: the few hundred voxels of a small object fill every bin.
BINS = 32


def intensity_likelihoods(image: np.ndarray, painted_object: np.ndarray, painted_background: np.ndarray,
                          bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(L_obj, L_bg)`` per voxel of ``image``: the painted object's and background's intensity histograms
    (equal-count bins over both samples, add-one smoothed so no intensity is impossible)."""
    obj, background = image[painted_object], image[painted_background]
    if obj.size == 0 or background.size == 0:
        ones = np.ones(image.shape, np.float32)
        return ones, ones  # no evidence either way: the gate changes nothing
    edges = np.unique(np.percentile(np.concatenate([obj, background]), np.linspace(0, 100, bins + 1)))
    if edges.size < 2:
        ones = np.ones(image.shape, np.float32)
        return ones, ones
    object_counts, _ = np.histogram(obj, edges)
    background_counts, _ = np.histogram(background, edges)
    object_density = (object_counts + 1) / (object_counts.sum() + object_counts.size)
    background_density = (background_counts + 1) / (background_counts.sum() + background_counts.size)
    index = np.clip(np.searchsorted(edges, image, side="right") - 1, 0, object_counts.size - 1)
    return object_density[index].astype(np.float32), background_density[index].astype(np.float32)


def painted_background(label: np.ndarray, annotated: np.ndarray, ring: int) -> np.ndarray:
    """The painted background used as the background sample: within ``ring`` pixels (in-plane) of the painted
    object on the painted slices (0: all of it, i.e. the whole crop of those slices)."""
    background = annotated & (label == 0)
    if ring <= 0:
        return background
    near = ndimage.binary_dilation(annotated & (label > 0), structure=np.ones((1, 3, 3), bool), iterations=ring)
    return background & near


@dataclass(frozen=True)
class IntensityEvidence:
    """Per-voxel likelihoods of the image's intensities under the painted object and background, computed once
    per propagation and used both inside the chain (:meth:`trim`) and over its result (:meth:`update`)."""

    object_likelihood: np.ndarray
    background_likelihood: np.ndarray

    @classmethod
    def from_paint(cls, image: np.ndarray, label: np.ndarray, annotated: np.ndarray, ring: int = 0) -> IntensityEvidence:
        """From the painted slices: ``label`` is ground truth where ``annotated``; ``ring`` as in
        :func:`painted_background`."""
        return cls(*intensity_likelihoods(image, annotated & (label > 0), painted_background(label, annotated, ring)))

    def posterior(self, foreground: np.ndarray, index=Ellipsis) -> np.ndarray:
        """Bayes' rule for a prior object probability ``foreground`` on the voxels ``index`` (a slice or all)."""
        numerator = foreground * self.object_likelihood[index]
        return np.divide(numerator, numerator + (1.0 - foreground) * self.background_likelihood[index],
                         out=np.zeros_like(foreground), where=numerator > 0)

    def update(self, probabilities: np.ndarray) -> np.ndarray:
        """``(C, k, j, i)`` probabilities with the object's total updated by the likelihood ratio; the classes keep
        their shares of it (which part of the object a voxel is stays the registration's call)."""
        return _rescaled(probabilities[1:], 1.0 - probabilities[0], self.posterior(1.0 - probabilities[0]), True)

    def trim(self, maps: np.ndarray, index: int) -> np.ndarray:
        """``refine(maps, slice)`` for :func:`~SparseSegLib.engine.propagation.propagate_slices`: the update on a
        chain's foreground maps ``(C - 1, j, i)`` of slice ``index``, lowering only (see the module doc)."""
        foreground = np.clip(maps.sum(0), 0.0, 1.0)
        return _rescaled(maps, foreground, np.minimum(self.posterior(foreground, index), foreground), False)


def _rescaled(classes: np.ndarray, foreground: np.ndarray, posterior: np.ndarray, with_background: bool) -> np.ndarray:
    """The foreground ``classes`` scaled so they sum to ``posterior`` (each keeping its share of ``foreground``),
    with the background ``1 - posterior`` in front when asked."""
    scale = np.divide(posterior, foreground, out=np.zeros_like(foreground), where=foreground > 0)
    scaled = (classes * scale[None]).astype(np.float32)
    return np.concatenate([(1.0 - posterior)[None].astype(np.float32), scaled]) if with_background else scaled
