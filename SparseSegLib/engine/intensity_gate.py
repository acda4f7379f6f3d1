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
(:func:`chain_refiner`) the update only trims: a rim voxel raised there would travel on and be raised again, which
flooded the left atrium's bright neighbours on the dev scans (docs/results/interactive.md, "Eighth session").
"""

from __future__ import annotations

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


def gate_by_intensity(probabilities: np.ndarray, image: np.ndarray, label: np.ndarray, annotated: np.ndarray,
                      ring: int) -> np.ndarray:
    """``(C, k, j, i)`` probabilities with the foreground's total updated by the intensity likelihood ratio; the
    classes keep their shares of it (which part of the object a voxel is stays the registration's call)."""
    obj_likelihood, background_likelihood = intensity_likelihoods(
        image, annotated & (label > 0), painted_background(label, annotated, ring))
    foreground = 1.0 - probabilities[0]
    numerator = foreground * obj_likelihood
    posterior = np.divide(numerator, numerator + probabilities[0] * background_likelihood,
                          out=np.zeros_like(foreground), where=numerator > 0)
    gated = np.empty_like(probabilities)
    gated[0] = 1.0 - posterior
    shares = np.divide(probabilities[1:], foreground[None], out=np.zeros_like(probabilities[1:]),
                       where=foreground[None] > 0)
    gated[1:] = shares * posterior[None]
    return gated


def chain_refiner(image: np.ndarray, label: np.ndarray, annotated: np.ndarray, ring: int):
    """``refine(maps, slice)`` for :func:`~SparseSegLib.engine.propagation.propagate_slices`: the same Bayes update
    applied to a chain's foreground maps ``(C - 1, j, i)`` on every slice it reaches, so a chain stops carrying
    what the image says is background instead of compounding it over the next slices."""
    obj_likelihood, background_likelihood = intensity_likelihoods(
        image, annotated & (label > 0), painted_background(label, annotated, ring))

    def refine(maps: np.ndarray, index: int) -> np.ndarray:
        foreground = np.clip(maps.sum(0), 0.0, 1.0)
        numerator = foreground * obj_likelihood[index]
        posterior = np.divide(numerator, numerator + (1.0 - foreground) * background_likelihood[index],
                              out=np.zeros_like(foreground), where=numerator > 0)
        posterior = np.minimum(posterior, foreground)  # trim only: growing inside the chain compounds into bright neighbours
        scale = np.divide(posterior, foreground, out=np.zeros_like(foreground), where=foreground > 0)
        return (maps * scale[None]).astype(np.float32)

    return refine
