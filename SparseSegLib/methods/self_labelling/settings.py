"""What self-labelling can be told: :class:`Settings`, the budgets' schedules, and how a run's settings resolve.

One dataclass holds every option so that a job's ``method_options``, ``--option KEY=VALUE`` and the presets
(:mod:`.presets`) all go through the same checks, and so that the settings a model was trained with can be stored
with it as plain data (``segmenter.training["settings"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ...engine.postprocess import POSTPROCESSING
from ...errors import SparseSegError
from ..base import MethodOptions


@dataclass
class Settings:
    """Everything the method can be told; defaults are the paper's (:data:`~.presets.FAITHFUL`)."""

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
        """Raise :class:`SparseSegError` (with a hint) for a value out of range, before any data loads."""
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


#: Schedules per budget: iterations per epoch, most epochs for the first model / later rounds, patience.
BUDGET_SETTINGS = {
    "quick": {"epoch_iterations": 10, "first_epochs": 8, "round_epochs": 2, "patience": 3, "lr_patience": 2,
              "fusion_epochs": 8},
    # paper: sized so the hippocampus benchmark (140 volumes, ~23 rounds) runs in about 10 min per variant on a
    # shared CPU; the paper trains up to 150 epochs per round, far beyond this (docs/results/self-labelling.md)
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
    (docs/results/self-labelling.md, second exploration).
    """
    return replace(settings, theta=settings.solo_theta) if settings.solo_theta else settings
