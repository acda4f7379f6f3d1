"""Pseudo-labels from probabilities: the two threshold readings, registration continuity, re-labelling.

Everything here turns a network's softmax into training targets (``UNKNOWN`` where a voxel stays out of the loss);
the loop decides which slices get them (:mod:`.schedule`) and never lets them overwrite ground truth.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ...engine.postprocess import postprocess_labels
from ...engine.sampling import UNKNOWN
from .settings import Settings


def pseudo_labels(probabilities: np.ndarray, theta: float, reading: str, background_theta: float = 0.0) -> np.ndarray:
    """Targets from ``(C, ...)`` probabilities: ``binarise`` (the paper's code) or ``ignore`` (stricter).

    ``binarise``: foreground where P(foreground) >= theta (its most probable class), background elsewhere,
    so every pixel gets a label. ``ignore``: the most probable class where its probability >= theta,
    ``UNKNOWN`` (left out of the loss) where the network is less sure; background needs
    ``background_theta`` when given. A network far from its annotated slice is sure of background long
    before it is sure of a thinning structure, so one threshold for both teaches it to shrink the structure
    round by round; a stricter background threshold leaves those pixels out of the loss instead.
    """
    if reading == "binarise":
        foreground = 1.0 - probabilities[0]
        label = np.where(foreground >= theta, probabilities[1:].argmax(0) + 1, 0)
        return label.astype(np.int16)
    label = probabilities.argmax(0).astype(np.int16)
    needed = np.where(label == 0, background_theta or theta, theta)
    label[probabilities.max(0) < needed] = UNKNOWN
    return label


def distance_to(gt: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """Distance of each of ``slices`` to the nearest ground-truth slice (``gt``: bool per slice)."""
    return np.abs(np.asarray(slices)[:, None] - np.flatnonzero(gt)[None]).min(1)


def erosion_at(distance: int, rate: float) -> int:
    """Pixels to erode the label carried onto a slice ``distance`` slices from the ground truth, at ``rate`` pixels
    per slice: the carried labels of a chain shrink by ``floor(distance * rate)`` pixels in all (0: none here)."""
    if rate <= 0 or distance <= 0:
        return 0
    return int(math.floor(distance * rate + 1e-9) - math.floor((distance - 1) * rate + 1e-9))


def inner_neighbour(gt: np.ndarray, s: int) -> int:
    """The slice next to ``s`` one step nearer its nearest ground-truth slice (``s`` itself on a GT slice)."""
    index = np.flatnonzero(gt)
    nearest = int(index[np.abs(index - s).argmin()])
    return s - int(np.sign(s - nearest))


def follow_footprint(proposal: np.ndarray, probabilities: np.ndarray, footprint: np.ndarray, threshold: float,
                     seeded: bool = False) -> np.ndarray:
    """Hysteresis on a pseudo-label: inside ``footprint`` (the neighbour's foreground carried onto this slice)
    foreground needs only P(fg) >= ``threshold``; elsewhere the proposal stands.

    A network far from its annotated slice is sure of background long before it is sure of a thinning,
    drifting structure; the registered neighbour label says where to expect it, the network still decides
    where it ends (P(fg) below the threshold keeps the proposal's background or unknown). ``seeded``: a
    region of the footprint is kept only where it touches the proposal's own (confident) foreground, as in
    hysteresis thresholding, so a carried label whose structure has ended (no confident pixel left) stops.
    """
    foreground = 1.0 - probabilities[0]
    keep = (footprint > 0) & (foreground >= threshold)
    if seeded:
        confident = proposal > 0
        regions, _ = ndimage.label(keep | confident)
        seeds = np.unique(regions[confident])
        keep &= np.isin(regions, seeds[seeds > 0])
    out = proposal.copy()
    out[keep] = probabilities[1:].argmax(0)[keep] + 1
    return out


def postprocessed_proposal(proposal: np.ndarray, probabilities: np.ndarray, mode: str) -> np.ndarray:
    """A whole-volume pseudo-label after the model's own post-processing ``mode`` (as ``predict`` applies it).

    What the post-processing removes (stray components) becomes background, what it fills (holes) foreground;
    uncertain voxels elsewhere stay ``UNKNOWN``, out of the loss.
    """
    if mode == "none":
        return proposal
    winner = probabilities.argmax(0)
    cleaned = postprocess_labels(winner.astype(np.uint8), probabilities, mode)
    out = proposal.copy()
    out[(cleaned == 0) & (proposal > 0)] = 0
    filled = (cleaned > 0) & (winner == 0)
    out[filled] = cleaned[filled]
    return out


def relabel_proposal(probabilities: np.ndarray, settings: Settings) -> np.ndarray:
    """A whole-volume pseudo-label from a final (fused) model: ``relabel_theta`` (or theta), then, with
    ``relabel_postprocess``, the model's own post-processing; the fusion passes and the 3D student share it."""
    proposal = pseudo_labels(probabilities, settings.relabel_theta or settings.theta, settings.threshold,
                             settings.background_theta)
    if settings.relabel_postprocess:
        proposal = postprocessed_proposal(proposal, probabilities, settings.postprocess)
    return proposal
