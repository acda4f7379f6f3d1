"""Incremental 2D self-labelling (Anderson et al., BMC Medical Imaging 2025; ../shared/docs/methods.md section 2).

One annotated slice per training volume (the central one). A 2D U-Net is trained on the ground-truth
slices (round 1, with flips + rotations), then, round after round, it predicts the next slices on both
sides of the labelled block of every volume (``k`` of the depth per round), keeps the confident pixels
as pseudo-labels (threshold ``theta``) and is fine-tuned on ground truth + pseudo-labels, until every
slice of every volume is labelled. Ground truth is never overwritten.

Registered variants (all share :class:`SelfLabellingLoop`, a :class:`~.common.RoundLoop`):

* ``self-labelling-faithful``: the paper: plain U-Net 8-16-32-64 / 128 with dropout 0.5, binary
  (classes merged) with BCE, RMSprop 1e-3 with LR x0.1 on plateau, early stopping on the validation
  part with the best weights carried to the next round, augmentation on the first model only,
  pseudo-labels frozen once added, threshold read as the code does (``binarise``: p < theta -> background).
* ``self-labelling-random``: the same, adding randomly chosen slices instead of growing outwards.
* ``self-labelling``: our improved default (see :data:`IMPROVED`, chosen by the ablation in README.md): for
  cohorts two runs labelling together (``co_labelling``), epochs three times the budget's length (``epoch_scale``).
* ``self-labelling-v6``: the previous default (the budget's epoch length, a 3D student as the model).
* ``self-labelling-v5``: the default before (two independent runs averaged, four fusion passes).
* ``self-labelling-v4``: the default before (one run, three fusion passes).
* ``self-labelling-v3``: the default before (no registration continuity, one fusion pass).
* ``self-labelling-v2``: v3 without distance weighting and fusion round.
* ``self-labelling-v1``: the first improved configuration (v2 + EMA teacher).
* ``self-labelling-faithful-ignore``: faithful with the stricter threshold reading (uncertain pixels ignored).
* ``self-labelling-no-ema`` / ``-no-refresh`` / ``-no-context``: v1 minus one change (the ablation rows).

Every setting can be overridden through ``MethodOptions.extra`` (a job's ``method_options``); unknown
keys are an error. The rounds stream through the worker (one volume, a full prediction per round)
and run for cohorts through ``sparseseg train/predict/bench``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..case import Case
from ..engine.axis_ensemble import AxisEnsemble, from_axis, to_axis
from ..engine.losses import MaskedDiceCELoss
from ..engine.inference import predict_probabilities
from ..engine.model import Segmenter
from ..engine.networks import NetworkConfig, build_network, default_patch_size
from ..engine.postprocess import POSTPROCESSING, postprocess_labels
from ..engine.preprocessing import normalize
from ..engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ..engine.slice_registration import slice_transform, warp_label
from ..engine.trainer import TrainingCancelled, seed_everything
from ..errors import SparseSegError
from .base import MethodOptions, Reporter, RoundResult, register
from ..engine.device import select_device
from .common import RoundLoop, class_names_of, fit, network_snapshot, new_segmenter


@dataclass
class Settings:
    """Everything the method can be told; defaults are the paper's (:data:`FAITHFUL`)."""

    classes: str = "merged"          # merged: binary foreground (paper); multi: every class natively
    k: float = 0.05                  # fraction of the depth pseudo-labelled per round (both sides together)
    theta: float = 0.7               # confidence threshold (paper: 0.6-0.8 best)
    solo_theta: float = 0.0          # theta of a run that labels alone (a worker job; ensemble 1 or no co_labelling); 0: theta
    threshold: str = "binarise"      # binarise: p_fg < theta -> background (paper code); ignore: max p < theta -> unknown
    background_theta: float = 0.0    # ignore reading: background needs p_bg >= this (0: theta); > theta counters shrinking
    continuity: float = 0.0          # foreground threshold inside the inner neighbour's label registered onto a slice (0: off)
    continuity_refresh: bool = True  # apply it when refreshing earlier pseudo-labels too (False: new slices only)
    continuity_seeded: bool = False  # keep a carried region only where it touches the network's confident foreground
    continuity_erode: float = 0.0    # pixels the carried label shrinks per slice (0.5: one every second slice), so a chain of carried labels dies out where a structure ends
    order: str = "outward"           # outward: next slices beside the labelled block; random: random slices
    weighting: str = "uniform"       # uniform | gaussian | stepwise, by normalised distance to the GT slice
    sigma: float = 0.2               # width of the gaussian weighting in normalised slice index (the paper's figure: 0.2)
    augment_first: bool = True       # flips + rotations up to 90 degrees on the first model only
    augment_rounds: bool = False     # ... and in every later round too (the fusion networks included)
    refresh: bool = False            # re-predict every pseudo-labelled slice each round instead of freezing
    ema: float = 0.0                 # EMA teacher decay for pseudo-labels and the final model (0: off)
    context: int = 0                 # 2.5D: neighbouring slices on each side as extra input channels
    postprocess: str = "none"        # none | lcc | fill | lcc-fill (largest component, hole filling)
    loss: str = "ce"                 # ce (= BCE for the binary task) | dice-ce
    optimizer: str = "rmsprop"       # rmsprop (paper; Keras defaults rho 0.9, eps 1e-7) | adam
    keep_optimizer: bool = True      # one optimiser for all rounds (Keras keeps it across fit calls); False: fresh per round
    learning_rate: float = 1e-3
    dropout: float = 0.5
    channels: tuple = (8, 16, 32, 64, 128)
    normalization: str = "zscore-slice"  # the paper z-scores each slice
    batch_size: int = 16
    foreground_ratio: float = 0.0    # share of batches centred on foreground (0: slices drawn uniformly, as the paper pools them)
    epoch_iterations: int = 0        # iterations per "epoch" (0: from the budget)
    epoch_scale: float = 1.0         # epochs this many times the budget's length; the fusion networks get as many fewer epochs
    first_epochs: int = 0            # most epochs for the first model (0: from the budget)
    round_epochs: int = 0            # most epochs per later round (0: from the budget)
    patience: int = 0                # early-stopping patience in epochs (0: from the budget)
    lr_patience: int = 0             # epochs without improvement before LR x0.1 (0: from the budget)
    max_rounds: int = 0              # cap on rounds for cohorts (0: until every volume is labelled)
    fuse_axes: bool = False          # a last round trains 2D networks across the two other axes on the labels; softmax averaged
    fusion_epochs: int = 0           # most epochs for each of those networks (0: from the budget)
    fusion_passes: int = 1           # fusion rounds; each after the first re-labels the pseudo-labels with the fused model
    relabel_postprocess: bool = False  # ... and applies ``postprocess`` to that label first (stray components out, holes in)
    relabel_theta: float = 0.0       # confidence those re-labels need (0: theta); the fused model is better calibrated than one network
    ensemble: int = 1                # cohorts: independent runs (training seeds seed, seed + 1, ...) whose models are averaged
    ensemble_passes: int = 0         # then passes in which the runs' averaged model re-labels every run's pseudo-labels
    student_3d: bool = False         # cohorts: a 3D U-Net trained on the final model's pseudo-labels of every training volume is the model
    co_labelling: bool = False       # the ensemble's runs (ensemble >= 2) go round by round together on one set of pseudo-labels, made by their averaged networks

    def check(self) -> None:
        choices = {"classes": ("merged", "multi"), "threshold": ("binarise", "ignore"), "order": ("outward", "random"),
                   "weighting": ("uniform", "gaussian", "stepwise"), "postprocess": POSTPROCESSING,
                   "loss": ("ce", "dice-ce"), "optimizer": ("rmsprop", "adam")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SparseSegError(f"self-labelling: {name} {getattr(self, name)!r} is not one of {', '.join(allowed)}",
                                     f"Set {name} to one of: {', '.join(allowed)}.")
        if not 0 < self.k <= 1:
            raise SparseSegError(f"self-labelling: k {self.k} must lie in (0, 1]", "E.g. k 0.05 (5% of the depth per round).")
        if not 0.5 <= self.theta < 1:
            raise SparseSegError(f"self-labelling: theta {self.theta} must lie in [0.5, 1)", "E.g. theta 0.7.")
        if self.background_theta and not 0.5 <= self.background_theta < 1:
            raise SparseSegError(f"self-labelling: background_theta {self.background_theta} must lie in [0.5, 1) or be 0",
                                 "E.g. background_theta 0.9, or 0 to use theta.")
        if not 0 <= self.ema < 1:
            raise SparseSegError(f"self-labelling: ema {self.ema} must lie in [0, 1)", "E.g. ema 0.99, or 0 for off.")
        if not 0 <= self.continuity < 1:
            raise SparseSegError(f"self-labelling: continuity {self.continuity} must lie in [0, 1)", "E.g. continuity 0.3, or 0 for off.")
        if self.solo_theta and not 0.5 <= self.solo_theta < 1:
            raise SparseSegError(f"self-labelling: solo_theta {self.solo_theta} must lie in [0.5, 1) or be 0",
                                 "E.g. solo_theta 0.7, or 0 to use theta.")
        if self.relabel_theta and not 0.5 <= self.relabel_theta < 1:
            raise SparseSegError(f"self-labelling: relabel_theta {self.relabel_theta} must lie in [0.5, 1) or be 0",
                                 "E.g. relabel_theta 0.5, or 0 to use theta.")
        if self.ensemble < 1:
            raise SparseSegError("self-labelling: ensemble must be >= 1", "E.g. ensemble 2 (two runs averaged), or 1 for one run.")
        if self.ensemble_passes < 0 or (self.ensemble_passes and (self.ensemble < 2 or not self.fuse_axes)):
            raise SparseSegError("self-labelling: ensemble_passes needs ensemble >= 2 and fuse_axes",
                                 "E.g. ensemble 2 fuse_axes true ensemble_passes 1, or ensemble_passes 0.")
        if self.fusion_passes < 1:
            raise SparseSegError("self-labelling: fusion_passes must be >= 1", "E.g. fusion_passes 2.")
        if self.sigma <= 0:
            raise SparseSegError(f"self-labelling: sigma {self.sigma} must be > 0", "E.g. sigma 0.2 (a fifth of the depth).")
        if self.continuity_erode < 0:
            raise SparseSegError("self-labelling: continuity_erode must be >= 0", "E.g. continuity_erode 1, or 0 for off.")
        if self.context < 0:
            raise SparseSegError("self-labelling: context must be >= 0", "E.g. context 1.")
        if self.epoch_scale <= 0:
            raise SparseSegError(f"self-labelling: epoch_scale {self.epoch_scale} must be > 0",
                                 "E.g. epoch_scale 3 (epochs three times the budget's length), or 1 for the budget's.")


#: The paper's settings.
FAITHFUL: dict = {}
#: The first improved configuration, benchmarked with its ablation rows (README.md): EMA teacher and 2.5D on.
IMPROVED_V1: dict = {"classes": "multi", "threshold": "ignore", "refresh": True, "ema": 0.99, "context": 1,
                     "postprocess": "lcc-fill", "loss": "dice-ce", "optimizer": "adam", "keep_optimizer": False}
#: The second configuration (issue 6, first stop): v1 without the EMA teacher.
IMPROVED_V2: dict = {**IMPROVED_V1, "ema": 0.0}
#: The third (issue 6, second stop): v2 with pseudo-labels weighted by a Gaussian of their distance to the annotated
#: slice, and a last round fusing 2D networks across the three axes.
IMPROVED_V3: dict = {**IMPROVED_V2, "weighting": "gaussian", "fuse_axes": True}
#: The fourth (issue 6, third stop): v3 with each new slice's pseudo-label following its inner neighbour's label
#: registered onto it (shrinking, so it dies out where a structure ends), and fusion passes that re-label the
#: pseudo-labels with the fused three-axis model, post-processed.
IMPROVED_V4: dict = {**IMPROVED_V3, "continuity": 0.3, "continuity_erode": 1, "fusion_passes": 3, "relabel_postprocess": True}
#: The fifth (issue 6, fourth stop): v4 with a fourth fusion pass, and two independent runs (training
#: seeds seed and seed + 1) averaged: one run in two lost its way at a structure's end (head end over-run 5x,
#: merged Dice 0.63 ± 0.30), and the average of the two held 0.78 ± 0.04 (README.md).
IMPROVED_V5: dict = {**IMPROVED_V4, "fusion_passes": 4, "ensemble": 2}
#: The sixth (issue 6, fifth stop): v5 with the two runs labelling together (every slice decided by their
#: averaged networks: the classes separate far better, anterior 0.19 -> 0.34), a 3D student trained on the final
#: model's pseudo-labels as the model (+0.008 / +0.012 merged Dice on two training-seed pairs), and theta 0.6: the
#: averaged networks are less sure than one at a structure's ends, where theta 0.7 left them under-segmented
#: (README.md, fourth exploration).
#: A run that labels alone (a worker job; ``ensemble=1``) keeps theta 0.7: one network is surer than the average, and
#: at 0.6 one v4 run over-ran a cohort's ends (0.753 against 0.786, second exploration); on 15 single-volume jobs the
#: two thresholds score alike (0.429 / 0.419 Dice, paired difference 0.010 ± 0.098; README.md).
IMPROVED_V6: dict = {**IMPROVED_V5, "co_labelling": True, "student_3d": True, "theta": 0.6, "solo_theta": 0.7}
#: Our improved default (issue 6, seventh stop): v6 with epochs three times the budget's length for the labelling
#: network (the fusion networks keep their training), and no 3D student. v6 scored 0.817 / 0.731 / 0.668 on three
#: training-seed pairs: its chains start from a first model of 160 iterations (validation Dice 0.09-0.42) and on two
#: pairs of three under-labelled from round 2 on (0.60x the true foreground by round 8); with three times the
#: training the pseudo-labels of all three pairs hold 0.89-0.93x it, Dice 0.84-0.85 after round 5 (v6: 0.71-0.77),
#: and the averaged 2D models score 0.846 / 0.833 / 0.802, which the 3D student no longer improves (0.830 / 0.828 /
#: 0.799) at about 10 more minutes (README.md, sixth exploration). Worker jobs (budget quick) gain too: 0.625 against
#: 0.390 Dice on 7 single-volume jobs, better on each, at about twice the time per job.
IMPROVED: dict = {**IMPROVED_V6, "epoch_scale": 3, "student_3d": False}

#: Schedules per budget: iterations per epoch, most epochs for the first model / later rounds, patience.
BUDGET_SETTINGS = {
    "quick": {"epoch_iterations": 10, "first_epochs": 8, "round_epochs": 2, "patience": 3, "lr_patience": 2,
              "fusion_epochs": 8},
    # paper: sized so the hippocampus benchmark (140 volumes, ~23 rounds) runs in about 10 min per variant on a
    # shared CPU; the paper trains up to 150 epochs per round, far beyond this (see README.md)
    "paper": {"epoch_iterations": 20, "first_epochs": 8, "round_epochs": 2, "patience": 2, "lr_patience": 1,
              "fusion_epochs": 20},
}


def resolve_settings(preset: dict, options: MethodOptions) -> Settings:
    """The preset, then the budget's schedule, then ``options.extra`` (a job's ``method_options``)."""
    known = {f.name for f in fields(Settings)}
    extra = dict(options.extra or {})
    unknown = sorted(set(extra) - known)
    if unknown:
        raise SparseSegError(f"self-labelling does not know the option(s) {', '.join(unknown)}",
                             f"Known options: {', '.join(sorted(known))}.")
    settings = Settings(**preset)
    from_budget = set()
    for key, value in BUDGET_SETTINGS[options.budget].items():
        if not getattr(settings, key):
            setattr(settings, key, value)
            from_budget.add(key)
    if options.batch_size:
        settings.batch_size = int(options.batch_size)
    for key, value in extra.items():
        kind = type(getattr(Settings(), key))
        setattr(settings, key, tuple(value) if kind is tuple else kind(value) if kind is not bool else bool(value))
    if "theta" in extra and "solo_theta" not in extra:
        settings.solo_theta = 0.0  # a theta the user gives holds for every run
    settings.check()
    scaled = from_budget - set(extra)  # what the user sets is taken as given
    if settings.epoch_scale != 1 and "epoch_iterations" in scaled:
        settings.epoch_iterations = max(1, int(round(settings.epoch_iterations * settings.epoch_scale)))
        if "fusion_epochs" in scaled:  # the fusion networks keep the budget's training, in longer epochs
            settings.fusion_epochs = max(1, int(round(settings.fusion_epochs / settings.epoch_scale)))
    return settings


def labelling_alone(settings: Settings) -> Settings:
    """The settings of a run whose pseudo-labels one network decides (``solo_theta`` as theta, when set).

    Co-labelled runs average their networks' softmax, which is less sure than one network where they disagree, at a
    structure's ends: the default's theta 0.6 was chosen for that, and one network at 0.6 over-ran a cohort's ends
    (README.md, second exploration).
    """
    return replace(settings, theta=settings.solo_theta) if settings.solo_theta else settings


def per_side(depth: int, k: float) -> int:
    """Slices added on each side of the labelled block per round: ``k`` of the depth over both sides, at least 1."""
    return max(1, int(round(k * depth / 2)))


def rounds_needed(labelled: np.ndarray, step: int, order: str) -> int:
    """Expansion rounds until every slice of a volume is labelled (``labelled``: bool per slice)."""
    if labelled.all():
        return 0
    if order == "random":
        return int(math.ceil(np.count_nonzero(~labelled) / (2 * step)))
    index = np.flatnonzero(labelled)
    if index.size == 0:
        raise SparseSegError("a training volume has no annotated slice", "Annotate at least one slice per volume.")
    # the farthest unlabelled slice from any labelled one decides
    distance = np.abs(np.arange(labelled.size)[:, None] - index[None]).min(1)
    return int(math.ceil(distance.max() / step))


def natural_rounds(labelled: list[np.ndarray], settings: Settings) -> int:
    """Rounds a run takes by itself: the first model, then until every slice of every volume is labelled
    (``labelled``: per volume, non-zero per annotated slice), then the fusion passes."""
    needed = max(rounds_needed(np.asarray(lab) > 0, per_side(len(lab), settings.k), settings.order) for lab in labelled)
    return 1 + needed + (settings.fusion_passes if settings.fuse_axes else 0)


def next_slices(labelled: np.ndarray, step: int, order: str, rng: np.random.Generator) -> np.ndarray:
    """Slice indices to pseudo-label next: within ``step`` of the labelled block (outward) or at random."""
    free = np.flatnonzero(~labelled)
    if free.size == 0:
        return free
    if order == "random":
        return np.sort(rng.choice(free, size=min(free.size, 2 * step), replace=False))
    index = np.flatnonzero(labelled)
    distance = np.abs(free[:, None] - index[None]).min(1)
    return free[distance <= step]


def slice_weights(depth: int, gt_slices: np.ndarray, mode: str, sigma: float = 0.2) -> np.ndarray:
    """Loss weight per slice for pseudo-labels by normalised distance to the nearest GT slice."""
    distance = np.abs(np.arange(depth)[:, None] - np.flatnonzero(gt_slices)[None]).min(1) / max(1, depth)
    if mode == "gaussian":
        return np.exp(-(distance**2) / (2 * sigma**2)).astype(np.float32)
    if mode == "stepwise":
        return np.select([distance <= 0.1, distance <= 0.2, distance <= 0.3], [1.0, 0.75, 0.5], 0.25).astype(np.float32)
    return np.ones(depth, np.float32)


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


def _rotate_batch(images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, generator: np.random.Generator):
    """Random flips and rotations up to +-90 degrees (the paper's augmentation), nearest for labels."""
    batch = images.shape[0]
    angles = torch.from_numpy(generator.uniform(-np.pi / 2, np.pi / 2, batch).astype(np.float32))
    flips = torch.from_numpy(np.where(generator.random((batch, 2)) < 0.5, -1.0, 1.0).astype(np.float32))
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flips[:, 0], -sin * flips[:, 1]
    theta[:, 1, 0], theta[:, 1, 1] = sin * flips[:, 0], cos * flips[:, 1]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # unknown target -> weight 0 outside the rotated slice
    targets = F.grid_sample((targets.float() + 1), grid, mode="nearest", padding_mode="zeros", align_corners=False) - 1
    weights = F.grid_sample(weights, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, targets.round().long(), weights


@torch.inference_mode()
def predict_slices(network: torch.nn.Module, image: np.ndarray, slices: np.ndarray, context: int, multiple: int,
                   batch: int = 64) -> np.ndarray:
    """Softmax probabilities ``(C, n, j, i)`` of the given slices of a normalised ``image`` (whole slices, padded)."""
    network.eval()
    depth, height, width = image.shape
    offsets = np.arange(-context, context + 1)
    index = np.clip(np.asarray(slices)[:, None] + offsets[None], 0, depth - 1)
    stack = torch.from_numpy(np.ascontiguousarray(image[index], dtype=np.float32))
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    stack = F.pad(stack, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    outputs = [torch.softmax(network(stack[i:i + batch]).float(), 1) for i in range(0, stack.shape[0], batch)]
    probabilities = torch.cat(outputs)[:, :, pad_h // 2: pad_h // 2 + height, pad_w // 2: pad_w // 2 + width]
    return probabilities.permute(1, 0, 2, 3).numpy()


class SelfLabellingLoop(RoundLoop):
    """The rounds of incremental self-labelling over one or many volumes (see the module doc).

    Round 1 trains on the ground-truth slices; round ``r > 1`` first pseudo-labels the next slices of
    every volume with the current model (the EMA teacher when enabled), then trains. ``targets`` and
    ``labelled`` (per volume: target map; per slice: 0 unlabelled, 1 GT, 2 pseudo) are the method
    state, saved with each round so a job resumes exactly where it stopped.
    """

    def __init__(self, name: str, segmenter: Segmenter, cases: list[Case], options: MethodOptions, reporter: Reporter,
                 settings: Settings, should_stop: Callable[[], bool] | None = None, validation: list[Case] | None = None,
                 stream: bool = True, keep_state: bool = True, total_rounds: int | None = None) -> None:
        super().__init__(name, segmenter, cases, options, reporter, should_stop)
        self.settings = settings
        self.stream = stream
        self.keep_state = keep_state
        self.images = [normalize(case.image, settings.normalization) for case in cases]
        self.targets = [self._target(case) for case in cases]
        self.labelled = [self._gt_slices(target) for target in self.targets]
        self.gt = [labelled == 1 for labelled in self.labelled]
        self.step = [per_side(target.shape[0], settings.k) for target in self.targets]
        self.rng = np.random.default_rng(options.seed + 7)
        self.validation = [(normalize(c.image, settings.normalization), self._target(c)) for c in validation or []]
        self.teacher = copy.deepcopy(segmenter.network) if settings.ema else None
        self.optimizer: torch.optim.Optimizer | None = None
        self.snapshots: list[dict] = []
        self.history: list[dict] = []
        self.proposed_foreground = 0  # foreground voxels among the last round's proposals (0 = collapse)
        self.total = int(total_rounds) if total_rounds else natural_rounds(self.labelled, settings)
        if settings.max_rounds and not total_rounds:
            self.total = min(self.total, int(settings.max_rounds))
        self.members: dict[int, torch.nn.Module] = {}  # networks across axes 1 and 2, trained by the fusion round
        self.slice_fields: dict[tuple[int, int], object] = {}  # continuity: registration of each slice's inner neighbour
        self.peers: list[SelfLabellingLoop] = []  # co-labelling: the other runs, whose networks label with this one's
        self.leader: SelfLabellingLoop | None = None  # co-labelling: the run that makes this one's pseudo-labels

    def label_together_with(self, followers: list["SelfLabellingLoop"]) -> None:
        """Co-labelling: ``followers`` train on this loop's pseudo-labels, which the average of every run's network makes.

        Independent runs of one chain fail in different places (one leaks past a structure's end, another loses
        it; README.md); averaging them at the end removes a leak but cannot bring back a lost end. Deciding every
        slice with their average keeps one run's early mistake from becoming the chain's.
        """
        for follower in followers:
            follower.targets, follower.labelled, follower.gt = self.targets, self.labelled, self.gt
            follower.leader = self
        self.peers = list(followers)

    # -- targets ----------------------------------------------------------------------------

    def _target(self, case: Case) -> np.ndarray:
        target = case.sparse_label(UNKNOWN)
        if self.settings.classes == "merged":
            target = np.where(target > 0, 1, target).astype(np.int16)
        return target

    @staticmethod
    def _gt_slices(target: np.ndarray) -> np.ndarray:
        labelled = (target >= 0).reshape(target.shape[0], -1).any(1).astype(np.int8)
        if not labelled.any():
            raise SparseSegError("a volume has no annotated voxel", "Annotate at least one slice of every volume.")
        return labelled

    def training_volumes(self, index: int, previous: RoundResult | None) -> list[TrainingVolume]:
        volumes = []
        for image, target, labelled, gt in zip(self.images, self.targets, self.labelled, self.gt):
            weight = None
            if self.settings.weighting != "uniform":
                per_slice = np.where(gt, 1.0, slice_weights(target.shape[0], gt, self.settings.weighting, self.settings.sigma)).astype(np.float32)
                weight = np.broadcast_to(per_slice[:, None, None], target.shape).copy()
            volumes.append(TrainingVolume(image, target, weight))
        return volumes

    def new_sampler(self, index: int) -> None:
        """The round's sampler over ground truth + pseudo-labels (the labelling network's; the fusion rounds' axis 0)."""
        self.sampler = PatchSampler(self.training_volumes(index, None), 2, self.segmenter.patch_size,
                                    context_slices=self.settings.context, augment=False,
                                    foreground_ratio=self.settings.foreground_ratio, seed=self.options.seed * 1000 + index)

    def labeller(self) -> torch.nn.Module:
        return self.teacher if self.teacher is not None else self.segmenter.network

    def expand(self) -> int:
        """Pseudo-label the next slices of every volume (and, with ``refresh``, re-predict earlier ones).

        With co-labelling peers, their labelling networks' softmax is averaged with this one's; a follower
        does not label (its leader has, for both).
        """
        self.proposed_foreground = 0
        if self.leader is not None:
            return 0
        networks, added = [self.labeller(), *(peer.labeller() for peer in self.peers)], 0
        multiple = self.segmenter.network_config.size_multiple
        for v, (image, target, labelled, gt) in enumerate(zip(self.images, self.targets, self.labelled, self.gt)):
            new = next_slices(labelled > 0, self.step[v], self.settings.order, self.rng)
            redo = np.flatnonzero(labelled == 2) if self.settings.refresh else np.array([], int)
            slices = np.union1d(new, redo).astype(int)
            if slices.size == 0:
                continue
            probabilities = np.mean([predict_slices(network, image, slices, self.settings.context, multiple)
                                     for network in networks], axis=0)
            # innermost first, so that with continuity each slice sees its inner neighbour's label of this round
            for n in np.argsort(distance_to(gt, slices), kind="stable"):
                s = int(slices[n])
                if gt[s]:
                    continue  # never touch a ground-truth slice
                proposal = pseudo_labels(probabilities[:, n], self.settings.theta, self.settings.threshold,
                                         self.settings.background_theta)
                if self.settings.continuity and (self.settings.continuity_refresh or labelled[s] == 0):
                    footprint = self.neighbour_footprint(v, s)
                    proposal = follow_footprint(proposal, probabilities[:, n], footprint, self.settings.continuity,
                                                self.settings.continuity_seeded)
                self.proposed_foreground += int((proposal > 0).sum())
                free = self.targets[v][s] == UNKNOWN if labelled[s] == 0 else np.ones(target.shape[1:], bool)
                # ground truth voxels of a partly annotated slice are never overwritten either
                free &= ~self._gt_voxels(v, s)
                self.targets[v][s][free] = proposal[free]
                labelled[s] = 2
            added += int(new.size)
        for loop in (self, *self.peers):
            loop.segmenter.network.train()
        return added

    def neighbour_footprint(self, v: int, s: int) -> np.ndarray:
        """The current label of slice ``s``'s inner neighbour, registered onto ``s`` (demons; field cached per slice)."""
        inner = inner_neighbour(self.gt[v], s)
        key = (v, s)
        if key not in self.slice_fields:
            self.slice_fields[key] = slice_transform(self.images[v][s], self.images[v][inner])
        carried = warp_label(self.targets[v][inner], self.slice_fields[key])
        pixels = erosion_at(int(distance_to(self.gt[v], [s])[0]), self.settings.continuity_erode)
        if pixels:
            # a carried label keeps its area slice after slice; shrinking it bounds the over-run past a structure's end
            # to a few slices: only what the network proposes confidently itself (P(fg) >= theta) keeps its size
            inside = ndimage.binary_erosion(carried > 0, iterations=pixels)
            carried = np.where(inside, carried, 0).astype(carried.dtype)
        return carried

    def _gt_voxels(self, v: int, s: int) -> np.ndarray:
        case = self.cases[v]
        if case.annotated is None:
            return np.ones(case.image.shape[1:], bool)
        return case.annotated[s]

    # -- training -----------------------------------------------------------------------------

    def _loss(self) -> MaskedDiceCELoss:
        return MaskedDiceCELoss(dice_weight=1.0 if self.settings.loss == "dice-ce" else 0.0, ce_weight=1.0)

    def _validate(self, network: torch.nn.Module, axis: int = 0) -> float:
        """Mean foreground Dice on the annotated voxels of the validation volumes (higher is better).

        A network across another ``axis`` than the annotated slices' predicts the whole volume, scored on the same voxels.
        """
        multiple = self.segmenter.network_config.size_multiple
        scores = []
        for image, target in self.validation:
            if axis:
                view = to_axis(image, axis)
                every = np.arange(view.shape[0])
                guess = from_axis(predict_slices(network, view, every, self.settings.context, multiple).argmax(0), axis)
                truth = target
            else:
                slices = np.flatnonzero((target >= 0).reshape(target.shape[0], -1).any(1))
                guess = predict_slices(network, image, slices, self.settings.context, multiple).argmax(0)
                truth = target[slices]
            known = truth >= 0
            for value in range(1, self.segmenter.num_classes):
                denominator = np.count_nonzero((truth == value) & known) + np.count_nonzero((guess == value) & known)
                if denominator:
                    scores.append(2.0 * np.count_nonzero((truth == value) & (guess == value) & known) / denominator)
        network.train()
        return float(np.mean(scores)) if scores else 0.0

    def new_optimizer(self, network: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        parameters = (network or self.segmenter.network).parameters()
        if self.settings.optimizer == "rmsprop":
            return torch.optim.RMSprop(parameters, lr=self.settings.learning_rate, alpha=0.9, eps=1e-7)
        return torch.optim.Adam(parameters, lr=self.settings.learning_rate, weight_decay=1e-5)

    def _ema_update(self, step: int) -> None:
        decay = min(self.settings.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for teacher, student in zip(self.teacher.parameters(), self.segmenter.network.parameters()):
                teacher.mul_(decay).add_(student.detach(), alpha=1 - decay)

    def train_this_round(self, index: int, stage: str, network: torch.nn.Module | None = None,
                         sampler: PatchSampler | None = None, axis: int = 0) -> dict:
        """Epochs of ``epoch_iterations`` until early stopping (patience) or the round's cap; best weights kept.

        By default the self-labelling network on ``self.sampler``; the fusion round passes a network across
        another ``axis`` with its own sampler (fresh optimiser, no EMA teacher, ``fusion_epochs``).
        """
        settings = self.settings
        member = network is not None
        network, sampler = network or self.segmenter.network, sampler or self.sampler
        teacher = None if member else self.teacher
        network.to(self.device).train()
        if teacher is not None:
            teacher.to(self.device).eval()
        augment = (settings.augment_first and index == 1) or (settings.augment_rounds and index > 1)
        epochs = settings.fusion_epochs if member else settings.first_epochs if index == 1 else settings.round_epochs
        if self.options.iterations_per_round:  # the worker's setting: one long epoch per round
            epochs, epoch_iterations = 1, int(self.options.iterations_per_round)
        elif self.options.iterations:  # --iterations: a total, the first model getting 4 shares, later rounds 1
            share = max(1, int(self.options.iterations) // (self.total + 3))
            epochs, epoch_iterations = 1, share * (4 if index == 1 else 1)
        else:
            epoch_iterations = settings.epoch_iterations
        if member and (self.options.iterations_per_round or self.options.iterations):
            epochs, epoch_iterations = 1, epoch_iterations * (1 if self.options.iterations_per_round else 4)
        if member:
            optimizer = self.new_optimizer(network)
        else:
            optimizer = self.optimizer if settings.keep_optimizer and self.optimizer is not None else self.new_optimizer()
            if settings.keep_optimizer:
                self.optimizer = optimizer
        for group in optimizer.param_groups:  # LR x0.1 on plateau acts within a round; each round starts at the base LR
            group["lr"] = settings.learning_rate
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=settings.lr_patience)
        loss_function = self._loss()
        aug_rng = np.random.default_rng(self.options.seed * 7919 + index)
        best, best_state, stale, losses, monitored = -float("inf"), None, 0, [], []
        total = epochs * epoch_iterations
        started, step = time.perf_counter(), 0
        for epoch in range(epochs):
            epoch_losses = []
            for _ in range(epoch_iterations):
                if self.should_stop is not None and self.should_stop():
                    raise TrainingCancelled()
                images, targets, weights = sampler.sample(settings.batch_size)
                if augment:
                    images, targets, weights = _rotate_batch(images, targets, weights, aug_rng)
                images, targets, weights = images.to(self.device), targets.to(self.device), weights.to(self.device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_function(network(images).float(), targets, weights)
                loss.backward()
                optimizer.step()
                step += 1
                self.global_step += 1
                if teacher is not None:
                    self._ema_update(self.global_step)
                epoch_losses.append(float(loss.detach()))
                if step % max(1, min(10, total // 20)) == 0 or step == total:
                    self.reporter.progress(stage, step, total, float(np.mean(epoch_losses[-10:])),
                                           (time.perf_counter() - started) / step)
            losses += epoch_losses
            # monitor: validation Dice on annotated voxels, else (as the paper's code) the training loss
            score = (self._validate(network if member else self.labeller(), axis) if self.validation
                     else -float(np.mean(epoch_losses)))
            monitored.append(round(score, 4))
            plateau.step(score)
            if score > best + 1e-4:
                best, stale = score, 0
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                best_teacher = network_snapshot(teacher) if teacher is not None else None
            else:
                stale += 1
                # fusion networks get at least half their epochs (added when they started from scratch and sat at
                # all-background for several epochs; kept with the warm start, which the final benchmark measured)
                if stale >= settings.patience and (not member or epoch + 1 >= epochs // 2):
                    break
        if best_state is not None and self.validation:
            network.load_state_dict(best_state)
            if best_teacher is not None:
                teacher.load_state_dict(best_teacher)
        network.cpu()
        if teacher is not None:
            teacher.cpu()
        return {"epochs": len(monitored), "iterations": step, "loss": float(np.mean(losses[-25:])) if losses else None,
                "monitor": "validation dice" if self.validation else "-training loss", "best": round(best, 4),
                "augmented": augment}

    # -- state ----------------------------------------------------------------------------------

    def method_state(self) -> dict:
        return {
            "settings": json.dumps(asdict(self.settings)),
            "targets": [torch.from_numpy(t.copy()) for t in self.targets],
            "labelled": [torch.from_numpy(lab.copy()) for lab in self.labelled],
            "teacher": network_snapshot(self.teacher) if self.teacher is not None else None,
            "rng": json.dumps(self.rng.bit_generator.state),
            "global_step": self.global_step,
            "history": json.dumps(self.history),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
            "members": {str(axis): network_snapshot(net) for axis, net in self.members.items()},
        }

    def load_method_state(self, state: dict) -> None:
        if not state:
            return
        if len(state["targets"]) != len(self.targets):
            raise SparseSegError("the checkpoint holds a different number of volumes", "Start the job again in a new folder.")
        self.targets = [t.numpy().astype(np.int16).copy() for t in state["targets"]]
        self.labelled = [lab.numpy().astype(np.int8).copy() for lab in state["labelled"]]
        if self.teacher is not None and state.get("teacher") is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.global_step = int(state.get("global_step", 0))
        self.history = json.loads(state.get("history", "[]"))
        if state.get("optimizer") is not None:
            self.optimizer = self.new_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
        for axis, weights in (state.get("members") or {}).items():
            self.members[int(axis)] = copy.deepcopy(self.segmenter.network)
            self.members[int(axis)].load_state_dict(weights)

    def final_network(self) -> torch.nn.Module:
        """The labelling network, or once the fusion round ran, the ensemble of it and the other axes' networks."""
        if not self.members:
            return self.labeller()
        return AxisEnsemble([self.labeller(), *(self.members[a] for a in sorted(self.members))], self.final_config().axes)

    def final_config(self) -> NetworkConfig:
        return replace(self.segmenter.network_config, axes=(0, *sorted(self.members)))

    def fuse(self, index: int, stage: str, teacher: tuple[torch.nn.Module, NetworkConfig] | None = None) -> dict:
        """The fusion round: a 2D network across each other axis, trained on the ground truth + pseudo-labels.

        Every slice is labelled by now, so a network across axis 1 or 2 sees each structure lengthwise, with
        full in-plane targets (uncertain voxels stay out of the loss); the final model averages all three.
        """
        summaries = {}
        if self.members:  # a later pass: the fused model re-labels, then every network is fine-tuned on its labels
            if self.peers and teacher is None:
                teacher = self.co_teacher()
            if self.leader is None:
                changed = self.relabel_with_fused_model(*(teacher or ()))
                whose = "the runs' averaged model" if teacher else "the fused model"
                self.reporter.log(f"{stage}: {whose} re-labelled the pseudo-labels ({changed} voxels changed)")
            self.new_sampler(index)
            summaries[0] = self.train_this_round(index, f"{stage} (axis 0)")
        reference = self._validate(self.labeller()) if self.validation else 0.0
        for axis in (1, 2):
            volumes = [TrainingVolume(to_axis(v.image, axis), to_axis(v.target, axis),
                                      None if v.weight is None else to_axis(v.weight, axis))
                       for v in self.training_volumes(index, None)]
            largest = tuple(int(n) for n in np.max([v.image.shape for v in volumes], axis=0))
            patch = default_patch_size(largest, self.segmenter.network_config)
            sampler = PatchSampler(volumes, 2, patch, context_slices=self.settings.context, augment=False,
                                   foreground_ratio=self.settings.foreground_ratio,
                                   seed=self.options.seed * 1000 + index * 10 + axis)
            # start from the labelling network: a fresh one on these imbalanced targets often stayed at "all background"
            # (validation Dice 0.001-0.007 for one of the two axes in two of three hippocampus runs); a later pass
            # goes on from the member of the pass before
            network = self.members[axis] if axis in self.members else copy.deepcopy(self.labeller())
            summaries[axis] = self.train_this_round(index, f"{stage} (axis {axis})", network=network, sampler=sampler, axis=axis)
            if self.validation and summaries[axis]["best"] < 0.5 * reference:
                # averaging in a network that missed the structure would erase the others' foreground
                self.reporter.warning(f"{stage}: the network across axis {axis} validated at {summaries[axis]['best']:.3f} "
                                      f"against {reference:.3f} for the labelling network; it is left out of the fusion",
                                      "Give the fusion networks more epochs (fusion_epochs) or more iterations.")
                self.members.pop(axis, None)
                continue
            self.members[axis] = network
        return {"epochs": sum(s["epochs"] for s in summaries.values()),
                "iterations": sum(s["iterations"] for s in summaries.values()),
                "loss": float(np.mean([s["loss"] for s in summaries.values()])),
                "monitor": summaries[1]["monitor"], "best": {str(a): s["best"] for a, s in summaries.items()},
                "augmented": False, "fused_axes": [0, *sorted(self.members)], "labeller_validation": round(reference, 4)}

    def co_teacher(self) -> tuple[torch.nn.Module, NetworkConfig]:
        """Co-labelling: every run's fused model averaged (network, config), to re-label the shared pseudo-labels."""
        average = average_runs([replace(loop.segmenter, network=loop.final_network(), network_config=loop.final_config())
                                for loop in (self, *self.peers)])
        return average.network, average.network_config

    def relabel_with_fused_model(self, network: torch.nn.Module | None = None, config: NetworkConfig | None = None) -> int:
        """Replace every pseudo-label with the fused model's (or the given ``network``'s; same threshold reading);
        ground truth stays.

        Networks across the other axes see each structure lengthwise and correct the labelling chain where it
        ran past a structure's end or lost it (README.md); their average is a better teacher than the chain.
        """
        if network is None:
            network, config = self.final_network(), self.final_config()
        changed = 0
        for v, (image, target, labelled) in enumerate(zip(self.images, self.targets, self.labelled)):
            probabilities = predict_probabilities(network, image, config, self.segmenter.patch_size, self.device)
            proposal = relabel_proposal(probabilities, self.settings)
            for s in np.flatnonzero(labelled == 2):
                free = ~self._gt_voxels(v, s)
                changed += int(np.count_nonzero(target[s][free] != proposal[s][free]))
                target[s][free] = proposal[s][free]
        return changed

    def predict(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        segmenter = replace(self.segmenter, network=self.final_network(), network_config=self.final_config())
        labels, probabilities = {}, {}
        for case in self.cases:
            labels[case.case_id], probabilities[case.case_id] = segmenter.predict(case.image, self.device)
        return labels, probabilities

    def round_metrics(self, index: int, labels: dict[str, np.ndarray]) -> dict:
        slices = sum(lab.size for lab in self.labelled)
        pseudo = [t[lab == 2] for t, lab in zip(self.targets, self.labelled)]
        pseudo_voxels = int(sum(np.count_nonzero(p >= 0) for p in pseudo))
        return {"labelled_slices": int(sum(np.count_nonzero(lab) for lab in self.labelled)), "slices": int(slices),
                "labelled_fraction": round(sum(np.count_nonzero(lab) for lab in self.labelled) / slices, 4),
                "pseudo_labelled_voxels": pseudo_voxels,
                "ignored_voxels": int(sum(np.count_nonzero(p < 0) for p in pseudo))}

    # -- the loop -------------------------------------------------------------------------------

    def run(self, state: dict | None = None) -> Iterator[RoundResult]:
        self.global_step = 0
        done = self.restore(state) if state is not None else 0
        for index in range(done + 1, self.total + 1):
            started = time.perf_counter()
            fusion_index = index - (self.total - self.settings.fusion_passes)
            if self.settings.fuse_axes and fusion_index >= 1 and index > 1 and all(lab.all() for lab in self.labelled):
                # only once every slice holds a label: networks across the other axes need whole targets
                yield self.fusion_round(index, started)
                continue
            added = self.expand() if index > 1 else 0
            self.new_sampler(index)
            stage = f"{self.name} round {index}/{self.total}"
            self.reporter.log(f"{stage}: {self.sampler.labelled_voxels} labelled voxels, {added} new slices pseudo-labelled")
            collapsed = index > 1 and added > 0 and self.proposed_foreground == 0
            after_collapse = bool(self.history) and bool(self.history[-1].get("collapsed_to_background"))
            # refreshed pseudo-labels often recover from one empty round (the next model proposes foreground again)
            if collapsed and (not self.settings.refresh or after_collapse):
                # Every later round would learn "all background" from these and end with an empty result.
                self.reporter.warning(f"{stage}: the network proposed no foreground on any of the {added} new slices, "
                                      "so every pseudo-label is background; the model is probably undertrained",
                                      "Give more iterations (--budget paper or a larger --iterations).")
            summary = self.train_this_round(index, stage)
            self.last_loss = summary["loss"]
            labels, probabilities = self.predict() if self.stream else ({}, {})
            metrics = {**summary, "new_slices": added, "pseudo_foreground_voxels": self.proposed_foreground if index > 1 else None,
                       "collapsed_to_background": collapsed, "seconds": round(time.perf_counter() - started, 3),
                       **self.round_metrics(index, labels)}
            self.history.append(metrics)
            self.snapshots.append({"round": index, "labelled_fraction": metrics["labelled_fraction"],
                                   "state": network_snapshot(self.final_network()), "config": self.final_config()})
            yield RoundResult(index, self.total, labels, probabilities, metrics=metrics,
                              state=self.state(index) if self.keep_state else None)

    def fusion_round(self, index: int, started: float, teacher: tuple[torch.nn.Module, NetworkConfig] | None = None) -> RoundResult:
        """One fusion pass; ``teacher`` (network, config) re-labels instead of this run's own fused model (an ensemble pass)."""
        stage = f"{self.name} round {index}/{self.total}"
        self.reporter.log(f"{stage}: fusing the three axes (2D networks across axes 1 and 2 on the labels so far)")
        summary = self.fuse(index, stage, teacher)
        self.last_loss = summary["loss"]
        labels, probabilities = self.predict() if self.stream else ({}, {})
        metrics = {**summary, "new_slices": 0, "pseudo_foreground_voxels": None, "collapsed_to_background": False,
                   "seconds": round(time.perf_counter() - started, 3), **self.round_metrics(index, labels)}
        self.history.append(metrics)
        self.snapshots.append({"round": index, "labelled_fraction": metrics["labelled_fraction"],
                               "state": network_snapshot(self.final_network()), "config": self.final_config()})
        return RoundResult(index, self.total, labels, probabilities, metrics=metrics,
                           state=self.state(index) if self.keep_state else None)


class _SelfLabelling:
    """Shared by the registered variants; ``preset`` selects the settings."""

    preset: dict = FAITHFUL
    summary = ""

    def settings(self, options: MethodOptions) -> Settings:
        return resolve_settings(self.preset, options)

    def job_settings(self, options: MethodOptions) -> Settings:
        """What a worker job runs with: one run, nothing labels with it (see :func:`labelling_alone`)."""
        return labelling_alone(self.settings(options))

    def check_options(self, options: MethodOptions) -> None:
        self.settings(options)

    def build(self, cases: list[Case], options: MethodOptions, settings: Settings) -> Segmenter:
        seed_everything(options.seed)
        if options.network.lower() != "2d":
            raise SparseSegError("self-labelling trains a 2D network", "Use --network 2d.")
        config = NetworkConfig(dims=2, channels=tuple(settings.channels), num_res_units=0, dropout=settings.dropout,
                               norm="none", context_slices=settings.context, arch="plain")
        largest = tuple(int(v) for v in np.max([case.image.shape for case in cases], axis=0))
        patch = tuple(options.patch_size) if options.patch_size else default_patch_size(largest, config)
        names = class_names_of(cases)
        colors: dict[int, tuple] = {}
        for case in cases:
            colors.update(case.class_colors)
        if settings.classes == "merged":
            names = {1: " + ".join(names.values()) if names else "Foreground"}
            colors = {1: colors[min(colors)]} if colors else {}
        return Segmenter(network=build_network(config, max(names, default=0) + 1), network_config=config,
                         patch_size=patch, class_names=names, normalization=settings.normalization, method=self.name,
                         class_colors=colors, postprocess=settings.postprocess)

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        """Self-label a cohort until every training volume is labelled; returns the final segmenter.

        With ``ensemble`` N, N independent runs (training seeds ``seed`` .. ``seed + N - 1``) are averaged into
        one model: one run may leak past a structure's end or lose it, and nothing it trains on shows which
        (README.md, third exploration); then ``ensemble_passes`` let the average re-label every run.

        Without validation cases, a cohort of :data:`HOLD_OUT_FROM` or more volumes gives 15% of them (seeded) to
        validation, as the paper's 70/15/15 protocol does, so that ``sparseseg train`` stops early and keeps the
        best weights of each round on held-out annotation exactly as the benchmark does, rather than watching its
        own training loss.
        """
        settings = self.settings(options)
        if not validation and len(cases) >= HOLD_OUT_FROM:
            held = set(np.random.default_rng(options.seed).choice(len(cases), max(1, round(0.15 * len(cases))), replace=False))
            validation = [case for i, case in enumerate(cases) if i in held]
            cases = [case for i, case in enumerate(cases) if i not in held]
            reporter.log(f"{self.name}: {len(validation)} of {len(cases) + len(validation)} volumes held out for validation "
                         "(early stopping on their annotated slices)")
        runs = []
        if settings.co_labelling and settings.ensemble > 1:
            runs = self._train_together(cases, options, reporter, validation, settings)
        else:
            settings = labelling_alone(settings)
        for run in range(settings.ensemble if not runs else 0):
            run_options = replace(options, seed=options.seed + run)
            if settings.ensemble > 1:
                reporter.log(f"{self.name}: ensemble run {run + 1}/{settings.ensemble} (training seed {run_options.seed})")
            runs.append(self._train_once(cases, run_options, reporter, validation, settings))
        segmenter, rounds, _ = runs[0]
        snapshots = list(segmenter.round_snapshots)
        if len(runs) > 1:
            loops = [loop for _, _, loop in runs]
            segmenter = average_runs([seg for seg, _, _ in runs])
            # the curve: the first run round by round, then the averaged model (its gain over one run), after each pass
            snapshots.append(self._snapshot(segmenter, snapshots[-1]))
            for number in range(settings.ensemble_passes):
                if not all(lab.all() for loop in loops for lab in loop.labelled):
                    break  # a capped run (max_rounds) has no whole pseudo-labels to re-label
                teacher = copy.deepcopy(segmenter.network), segmenter.network_config
                for run, loop in enumerate(loops):
                    loop.total += 1
                    result = loop.fusion_round(loop.total, time.perf_counter(), teacher)
                    runs[run][1].append({**result.metrics, "ensemble_pass": number + 1})
                segmenter = average_runs([replace(seg, network=loop.final_network(), network_config=loop.final_config())
                                          for (seg, _, _), loop in zip(runs, loops)])
                snapshots.append(self._snapshot(segmenter, snapshots[-1]))
            rounds = [{**r, "ensemble_run": n + 1} for n, (_, run_rounds, _) in enumerate(runs) for r in run_rounds]
        if settings.student_3d:
            for snapshot in snapshots:  # the 2D rounds are fed as the 2D model is, the student its own way
                snapshot.setdefault("patch_size", segmenter.patch_size)
                snapshot.setdefault("normalization", segmenter.normalization)
            segmenter, student_summary = self._train_student(segmenter, cases, options, reporter, validation, settings)
            snapshots.append({**self._snapshot(segmenter, snapshots[-1]), "patch_size": segmenter.patch_size,
                              "normalization": segmenter.normalization})
            rounds = [*rounds, student_summary]
        segmenter.training = {"stage": self.name, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                                               for k, v in asdict(settings).items()},
                              "train": {"iterations": int(sum(r["iterations"] for r in rounds)),
                                        "batch_size": settings.batch_size, "learning_rate": settings.learning_rate},
                              "rounds": rounds, "final_loss": rounds[-1]["loss"] if rounds else None}
        segmenter.round_snapshots = snapshots  # per-round weights for the benchmark's test curve (not saved)
        return segmenter

    def _train_student(self, teacher: Segmenter, cases: list[Case], options: MethodOptions, reporter: Reporter,
                       validation: list[Case] | None, settings: Settings) -> tuple[Segmenter, dict]:
        """A 3D U-Net trained on the final 2D model's pseudo-labels of every training volume (ground truth kept).

        The 2D networks decide slice by slice (even fused across three axes), each training volume's labels carrying
        its own chain's mistakes; a 3D network trained on all of them at once learns one shape from the cohort
        (confident voxels only: uncertain ones stay out of the loss). Measured: +0.008 / +0.012 Dice (README.md).
        """
        started, device, volumes = time.perf_counter(), select_device(options.device), []
        # validated (best weights kept) as the bench validates the full 3D baseline: ten times over its schedule
        student_options = replace(options, network="3d", validate_every=max(1, options.schedule(3)["iterations"] // 10)
                                  if validation else 0)
        student = new_segmenter(cases, student_options, self.name)
        student = replace(student, network=build_network(student.network_config, teacher.num_classes),
                          class_names=teacher.class_names, class_colors=teacher.class_colors, postprocess=teacher.postprocess)
        for case in cases:
            _, probabilities = teacher.predict(case.image, device)
            target = relabel_proposal(probabilities, settings)
            truth = case.sparse_label(UNKNOWN)
            if settings.classes == "merged":
                truth = np.where(truth > 0, 1, truth)
            known = truth != UNKNOWN
            target[known] = truth[known]  # ground truth is never overruled
            volumes.append(TrainingVolume(normalize(case.image, student.normalization), target.astype(np.int16)))
        merged = (lambda c: replace(c, label=(c.label > 0).astype(c.label.dtype))) if settings.classes == "merged" else (lambda c: c)
        reporter.log(f"{self.name}: training a 3D student on the pseudo-labels of {len(volumes)} volumes")
        summary = fit(student, volumes, student_options, reporter, f"{self.name} 3D student",
                      [merged(c) for c in validation] if validation else None)
        return student, {"student": "3d", "iterations": summary["train"]["iterations"], "loss": summary["final_loss"],
                         "seconds": round(time.perf_counter() - started, 3)}

    @staticmethod
    def _snapshot(segmenter: Segmenter, previous: dict) -> dict:
        return {"round": previous["round"] + 1, "labelled_fraction": previous["labelled_fraction"],
                "state": network_snapshot(segmenter.network), "config": segmenter.network_config}

    def _train_once(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None,
                    settings: Settings) -> tuple[Segmenter, list[dict], SelfLabellingLoop]:
        """One self-labelling run over the cohort: the trained segmenter (with its round snapshots), its round
        metrics, and the loop (its pseudo-labels, for the ensemble passes)."""
        segmenter = self.build(cases, options, settings)
        loop = SelfLabellingLoop(self.name, segmenter, cases, options, reporter, settings, validation=validation,
                                 stream=False, keep_state=False)
        reporter.log(f"{self.name}: {len(cases)} volumes, {loop.total} rounds, k {settings.k:g} "
                     f"({min(loop.step)}-{max(loop.step)} slice(s) per side per round), theta {settings.theta:g} "
                     f"({settings.threshold}), order {settings.order}, classes {settings.classes}")
        rounds = []
        for result in loop.run():
            rounds.append(result.metrics)
            reporter.log(f"{self.name} round {result.index}/{result.total}: {result.metrics['labelled_fraction']:.1%} of "
                         f"slices labelled, {result.metrics['epochs']} epochs, loss {result.metrics['loss']:.3f}, "
                         f"monitor {result.metrics['best']}")
        # a copy: the loop's own segmenter keeps the labelling network (an ensemble pass trains it on)
        trained = replace(segmenter, network=loop.final_network(), network_config=loop.final_config())
        trained.round_snapshots = loop.snapshots
        return trained, rounds, loop

    def _train_together(self, cases: list[Case], options: MethodOptions, reporter: Reporter,
                        validation: list[Case] | None, settings: Settings) -> list[tuple[Segmenter, list[dict], SelfLabellingLoop]]:
        """Co-labelling: the ``ensemble`` runs (training seeds seed, seed + 1, ...) go through the rounds side by side
        on one set of pseudo-labels, each slice decided by their averaged networks (and each re-labelling pass by
        their averaged fused models); each run trains its own networks on them. Returns what :meth:`_train_once`
        returns, per run."""
        segmenters = [self.build(cases, replace(options, seed=options.seed + run), settings) for run in range(settings.ensemble)]
        loops = [SelfLabellingLoop(self.name, segmenter, cases, replace(options, seed=options.seed + run), reporter, settings,
                                   validation=validation, stream=False, keep_state=False)
                 for run, segmenter in enumerate(segmenters)]
        loops[0].label_together_with(loops[1:])
        reporter.log(f"{self.name}: {len(cases)} volumes, {loops[0].total} rounds, {len(loops)} runs (training seeds "
                     f"{options.seed}-{options.seed + len(loops) - 1}) labelling together, k {settings.k:g}, theta "
                     f"{settings.theta:g} ({settings.threshold}), classes {settings.classes}")
        rounds: list[list[dict]] = [[] for _ in loops]
        for results in zip(*(loop.run() for loop in loops)):
            for run, result in enumerate(results):
                rounds[run].append(result.metrics)
            reporter.log(f"{self.name} round {results[0].index}/{results[0].total}: {results[0].metrics['labelled_fraction']:.1%} "
                         f"of slices labelled, monitor {', '.join(str(r.metrics['best']) for r in results)}")
        runs = []
        for segmenter, loop, run_rounds in zip(segmenters, loops, rounds):
            trained = replace(segmenter, network=loop.final_network(), network_config=loop.final_config())
            trained.round_snapshots = loop.snapshots
            runs.append((trained, run_rounds, loop))
        return runs

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        """``options.rounds`` rounds on the job's volume(s), a full prediction streamed after each.

        The 2D network works on slices across the axis the user painted (the axis with the fewest annotated
        slices): the volumes are transposed so that it comes first, and every result is transposed back.
        """
        settings = self.job_settings(options)
        axis, order, work = job_frame(cases)
        inverse = tuple(int(a) for a in np.argsort(order))
        segmenter = self.build(work, options, settings)
        loop = SelfLabellingLoop(self.name, segmenter, work, options, reporter, settings, should_stop=should_stop,
                                 total_rounds=int(options.rounds))
        if axis:
            reporter.log(f"{self.name}: annotated slices lie across array axis {axis}; the 2D network runs along it")
        cohort_only = [name for name, on in ((f"ensemble {settings.ensemble}", settings.ensemble > 1),
                                             ("the 3D student", settings.student_3d)) if on]
        if cohort_only:
            reporter.log(f"{self.name}: {' and '.join(cohort_only)} apply to cohorts (sparseseg train/bench); "
                         "this job streams one run of 2D networks")
        reporter.log(f"{self.name}: theta {settings.theta:g} ({settings.threshold}), k {settings.k:g}, one run labelling alone")
        for result in loop.run(state):
            if axis:
                result.labels = {k: np.ascontiguousarray(v.transpose(inverse)) for k, v in result.labels.items()}
                result.probabilities = {k: np.ascontiguousarray(v.transpose((0,) + tuple(a + 1 for a in inverse)))
                                        for k, v in result.probabilities.items()}
                result.metrics["slice_axis"] = axis
            yield result

    def segmenter_from_state(self, cases: list[Case], options: MethodOptions, state: dict) -> Segmenter:
        """The model a job's round state holds, on the job volume's own axes (Slicer's "Save model").

        A job trains on the volume transposed so that the painted axis comes first (:meth:`run_rounds`), and
        after a fusion round holds networks across the other two axes too: the labelling network and those
        members are rebuilt as the job built them and given the original array axes they run across.
        """
        axis, order, work = job_frame(cases)
        segmenter = self.build(work, options, self.job_settings(options))
        labelling = segmenter.network
        try:
            labelling.load_state_dict(state["network"])
            members = {}
            for member_axis, weights in ((state.get("method_state") or {}).get("members") or {}).items():
                members[int(member_axis)] = copy.deepcopy(labelling)
                members[int(member_axis)].load_state_dict(weights)
        except RuntimeError as error:
            raise SparseSegError(f"the checkpoint does not fit this job's {self.name} network "
                                 f"({str(error).splitlines()[0][:160]})",
                                 "The job's settings changed since the checkpoint was written; run the job again.") from None
        job_axes = (0, *sorted(members))
        axes = tuple(order[a] for a in job_axes)  # job axes -> the volume's own
        # a member's slices keep the job frame's in-plane order, which may be the other way round on the volume's own
        swap = tuple([order[b] for b in range(3) if b != a] != [c for c in range(3) if c != order[a]] for a in job_axes)
        config = replace(segmenter.network_config, axes=axes, swap_in_plane=swap if any(swap) else ())
        network = AxisEnsemble([labelling, *(members[a] for a in sorted(members))], axes) if members else labelling
        # the saved patch is the one across axis 0: a network across another axis sizes its own from the image
        patch = segmenter.patch_size if axes[0] == 0 else default_patch_size(cases[0].image.shape, config)
        # the job z-scored each slice across the painted axis (on the transposed volume)
        normalization = f"zscore-slice-{axis}" if axis and segmenter.normalization == "zscore-slice" else segmenter.normalization
        return replace(segmenter, network=network, network_config=config, patch_size=patch, normalization=normalization)


#: Cohorts at least this large give 15% of their volumes to validation when none are given (see ``train``).
HOLD_OUT_FROM = 10


def average_runs(segmenters: list[Segmenter]) -> Segmenter:
    """One segmenter averaging the softmax of every network of several independently trained runs.

    Runs started from other seeds make partly independent errors (one loses a thin structure's end that
    another follows), so their mean is steadier than any one; each run's networks keep their own axes.
    """
    members, axes = [], []
    for segmenter in segmenters:
        network = segmenter.network
        if isinstance(network, AxisEnsemble):
            members += list(network.members)
            axes += list(network.axes)
        else:
            members.append(network)
            axes += list(segmenter.network_config.axes)
    config = replace(segmenters[0].network_config, axes=tuple(axes))
    return replace(segmenters[0], network=AxisEnsemble(members, config.axes), network_config=config)


def painted_axis(cases: list[Case]) -> int:
    """The array axis across which the annotation lies in whole slices: the one with the fewest annotated slices."""
    annotated = cases[0].annotated
    if annotated is None or annotated.all():
        return 0
    counts = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts.append(int(np.count_nonzero(annotated.any(axis=others))))
    return int(np.argmin(counts))  # ties -> the lowest axis (0, the slice stack)


def job_frame(cases: list[Case]) -> tuple[int, tuple[int, int, int], list[Case]]:
    """The painted axis, the axis order that brings it first, and the cases transposed to that order.

    A job's 2D networks work on slices across the painted axis; training and Save model must agree on the frame.
    """
    axis = painted_axis(cases)
    order = (axis,) + tuple(a for a in range(3) if a != axis)
    return axis, order, [transpose_case(case, order) for case in cases] if axis else cases


def transpose_case(case: Case, order: tuple[int, ...]) -> Case:
    """``case`` with its arrays transposed to ``order`` (spacing follows; origin and direction are not needed)."""
    from ..case import Geometry

    shape = tuple(case.image.shape[a] for a in order)
    spacing_kji = tuple(case.geometry.spacing_kji[a] for a in order)
    geometry = Geometry(size=tuple(reversed(shape)), spacing=tuple(reversed(spacing_kji)))
    flip = (lambda a: None if a is None else np.ascontiguousarray(a.transpose(order)))
    return replace(case, image=flip(case.image), geometry=geometry, label=flip(case.label), annotated=flip(case.annotated))


def _variant(name: str, preset: dict, summary: str) -> type:
    cls = type(name.replace("-", "_").title().replace("_", ""), (_SelfLabelling,), {"preset": preset, "summary": summary})
    return register(name)(cls)


_variant("self-labelling", IMPROVED,
         "incremental 2D self-labelling, our improved default (multi-class, Dice+CE, 2.5D, refreshed pseudo-labels "
         "weighted by distance, registered onto each new slice from its neighbour, uncertain pixels ignored, "
         "three-axis fusion re-labelling the pseudo-labels, largest component + hole filling; for cohorts two runs "
         "labelling together; epochs three times the budget's)")
_variant("self-labelling-v6", IMPROVED_V6, "the sixth improved configuration: the default with the budget's epoch length "
         "and a 3D student trained on its pseudo-labels as the model")
_variant("self-labelling-v5", IMPROVED_V5, "the fifth improved configuration: two independent runs of v4 with four fusion "
         "passes, averaged")
_variant("self-labelling-v4", IMPROVED_V4, "the fourth improved configuration: one run of the default with three fusion passes")
_variant("self-labelling-v3", IMPROVED_V3, "the third improved configuration: the default without registration continuity "
         "and with one fusion pass")
_variant("self-labelling-v2", IMPROVED_V2, "the second improved configuration: the default without distance weighting and fusion")
_variant("self-labelling-v1", IMPROVED_V1, "the first improved configuration: v2 plus an EMA teacher")
_variant("self-labelling-faithful", FAITHFUL, "incremental 2D self-labelling as in Anderson et al. 2025 (binary, frozen pseudo-labels)")
_variant("self-labelling-random", {**FAITHFUL, "order": "random"}, "faithful self-labelling adding random slices (paper's random expansion)")
_variant("self-labelling-faithful-ignore", {**FAITHFUL, "threshold": "ignore"},
         "faithful self-labelling, stricter threshold reading (uncertain pixels ignored)")
_variant("self-labelling-no-ema", {**IMPROVED_V1, "ema": 0.0}, "ablation: v1 without the EMA teacher")
_variant("self-labelling-no-refresh", {**IMPROVED_V1, "refresh": False}, "ablation: v1 with frozen pseudo-labels")
_variant("self-labelling-no-context", {**IMPROVED_V1, "context": 0}, "ablation: v1 without 2.5D context")
_variant("self-labelling-no-ema-no-context", {**IMPROVED_V1, "ema": 0.0, "context": 0},
         "ablation: v1 without EMA teacher and 2.5D context")
