"""The ``collaborative`` method's options (``--option KEY=VALUE`` / a job's ``method_options``), checked up front."""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.postprocess import POSTPROCESSING
from ...engine.registration_network import REGULARIZERS, SIMILARITIES, RegistrationConfig
from ...errors import SparseSegError
from ..option_parsing import parse_settings, slice_axes

BRANCHES = ("both", "semi", "registration")
INTENSITIES = ("none", "chain")
REGISTRATIONS = ("network", "demons", "propagate")
FUSIONS = ("weighted", "intersection", "union")
REFINE_TARGETS = ("network", "fused", "classes")
PSEUDO_CLASSES = ("propagated", "ground-truth", "auto")

#: The options each registered method starts from (``--option`` wins over them). ``collaborative-faithful`` is the
#: paper (the dataclass defaults). ``collaborative``, our default since the thirteenth session: the single-scan
#: default propagates each training volume's labelled slice (``registration=propagate``) and the final network learns
#: from that alone (``branches=registration``): hippocampus split validation DSC 78.1 against 54.8 for the earlier
#: default (intersection fusion + demons); test splits: hippocampus 76.3 (was 54.6), left atrium 75.6 (was 73.7)
#: (docs/results/collaborative-default.md, "Thirteenth session"). Since the fourteenth, its predictions keep the largest
#: component with holes filled (``postprocess=lcc-fill``): validation DSC left atrium 72.8 against 70.2, hippocampus
#: 78.6 against 78.1 ("Fourteenth session"; ``object_threshold=0.8`` helped the left atrium's but cost the
#: hippocampus's 4.5 points, so it stays an option). Since the fifteenth, the final network learns from the labels the
#: single-scan default gives a user rather than the argmax of its probabilities (``propagate_targets=labels``), as
#: one network per slice axis (``final_axes=0,1,2``): validation DSC left atrium 75.7 against 72.8, hippocampus 79.8
#: against 78.6; either change alone lost on one data set ("Fifteenth session"). Since the sixteenth, the object
#: threshold of its predictions is measured per model (``prediction_threshold=auto``, :mod:`.calibration`):
#: validation DSC left atrium 80.2 against 78.0 at the default budget (79.4 against 76.7 at 400 iterations), hippocampus
#: 79.9 against 80.2 ("Sixteenth session"; a fixed 0.7 was best on the left atrium and cost the hippocampus 4.6).
#: Since the twenty-second, with several object classes the final networks learn the split between them from the
#: labelled slices and only object against background from the pseudo-labels (``pseudo_classes=auto``: so in a
#: cohort; a single-scan job keeps the propagated classes): hippocampus validation class mean 53.4 -> 60.5 (anterior
#: 35.5 -> 47.5), merged DSC 79.9 -> 80.5; one object class (the left atrium) is unchanged by construction; on five
#: hippocampus dev scans a single-scan job lost merged Dice with it (0.763 -> 0.731) ("Twenty-second session").
#: Since the twenty-third, there the networks across the two other axes alone split the object into its classes
#: (``class_axes=auto``): hippocampus validation class mean 59.1 -> 69.0 (better on 30 of 30 volumes), merged DSC
#: 80.1 -> 80.2 ("Twenty-third session"), and each class keeps as many parts as its training targets show
#: (``class_parts=auto``): class mean 69.0 -> 71.0, the head's HD95 13.6 -> 4.9 mm, merged DSC unchanged.
FAITHFUL: dict = {}
IMPROVED: dict = {"fusion": "intersection", "registration": "propagate", "branches": "registration",
                  "postprocess": "lcc-fill", "propagate_targets": "labels", "final_axes": "0,1,2",
                  "prediction_threshold": "auto", "pseudo_classes": "auto", "class_axes": "auto",
                  "class_parts": "auto"}


@dataclass(frozen=True)
class CollaborativeSettings:
    """The paper's choices (Osman et al., seed collaborative-learning.md) and what was scaled down for a CPU, and why.
    These defaults are ``collaborative-faithful``; ``collaborative`` starts from :data:`IMPROVED`.

    * ``branches``: ``both`` (the method), ``semi`` / ``registration`` (the paper's Set 1 ablations Semi-PL-Net and
      Self-PL-Net: the final network learns from that branch's pseudo-labels alone).
    * ``registration``: ``network`` (the paper: a 2D registration network trained on neighbouring-slice pairs,
      :mod:`~SparseSegLib.engine.registration_network`) or ``demons`` (training-free SimpleITK demons of
      :mod:`~SparseSegLib.engine.propagation`, the single-scan default's registration, coarse to fine on
      thick-slice scans as there: :func:`~SparseSegLib.engine.propagation.demons_levels_for`). Both carry the label with
      :func:`~SparseSegLib.engine.propagation.propagate_slices`. ``propagate``: the single-scan default
      (:mod:`SparseSegLib.methods.propagate`: demons registration + a network trained on that one volume, fused) run
      on every training volume from its labelled slices (:mod:`.propagated`), ``propagate_workers`` volumes at a time
      (0: one per CPU core), ``propagate_options`` (``key=value;key=value``) passed to it; ``propagate_cache``, a
      folder that keeps each volume's result for the next run with the same inputs (none: no cache);
      ``propagate_targets``: what of its result the branch hands on, ``argmax`` (the most likely class of its
      probabilities) or ``labels`` (the labels it gives a user: its object threshold, anchoring at the paint and end
      shaping applied; ``object_threshold`` then does not apply: give the single-scan default's own in
      ``propagate_options``). ``reg_*``
      configure the network: paper Adam 0.01,
      batch 32; here 1e-3 and 16 (0.01 made the U-Net head diverge in short runs), ``reg_iterations`` steps.
      ``open_end`` > 0 fades the chain beyond the labelled slice over that many object radii (0: the paper, no fade).
      ``intensity``: ``chain`` trims what the chain carries by the labelled slice's intensity histograms, on every
      slice and once over the result, as the single-scan default does (:mod:`~SparseSegLib.engine.intensity_gate`);
      ``none`` (the paper) does not.
    * Semi-supervised branch, counted in epochs of ``epoch_iterations`` steps (a batch of labelled slices plus a
      batch of other slices each): labelled slices only until ``k1``, then pseudo-labels (the argmax of the network
      as it was at the end of the previous epoch: "recomputed after every epoch") weighted by alpha(t), rising
      linearly from 0 at ``k1`` to ``alpha_f`` at ``k2``; ``semi_epochs`` in all. Paper: K1 = 50, K2 = 100,
      alpha_f = 3, gamma = 1; the epoch counts are scaled down (30 epochs of 10 steps) for a CPU.
    * ``fusion``: ``weighted`` (the paper: certain = both branches agree, weight 1 with Dice + 1.0 CE; uncertain =
      only one says object, labelled object with ``beta`` x (Dice + ``gamma_uncertain`` CE)), ``intersection``
      (object only where both say so, the rest background) or ``union`` (object where either says so) (Set 4).
    * Final network: the cohort's 2D network trained on ground truth + fused labels for the budget's iterations
      (``--iterations``); flips when ``augment``; ``final_iterations`` > 0 overrides. ``confidence`` > 0 leaves
      out of its loss every voxel of an unlabelled slice where the registration branch's most likely class has a
      lower probability (the contour band where propagation hesitates and is most often wrong; 0: the paper, every
      voxel). ``object_threshold`` > 0.5: the registration branch says object only where its object classes
      together exceed this probability (the single-scan default's rule, ``engine.postprocess.object_labels``; 0: the paper, the
      most likely class); it trims the contour band that a propagated label tends to overrun. ``postprocess`` (``none``, ``lcc``, ``fill``, ``lcc-fill``, :mod:`~SparseSegLib.engine.postprocess`)
      is stored with the model and applied to every prediction (the paper: none); its hole filling is dropped
      where most training targets enclose background their labelled slices call background (objects with real
      cavities, :func:`~SparseSegLib.methods.collaborative.labelled_holes`). ``final_axes`` (e.g. ``0,1,2``):
      one final network per slice axis (0: across the labelled slices, the paper), their softmax averaged
      (:mod:`.axes`); each trains for the full budget. ``final_seeds`` > 1: that many networks per axis, each from
      its own seed (initialisation and batches), all averaged: a seed ensemble, costing that many final stages.
    * ``prediction_threshold`` > 0.5: the final networks' predictions say object only where the object classes
      together exceed it (:func:`~SparseSegLib.engine.postprocess.object_labels`, before ``postprocess``; stored
      with the model; 0: the most likely class, the paper). ``auto``: the threshold at which the networks label as
      many object voxels over their own training volumes as their targets hold (:mod:`.calibration`).
    * ``pseudo_classes`` (several object classes): ``propagated`` (the paper) trains the final networks on the
      pseudo-labels' classes; ``ground-truth`` takes from the pseudo-labels only what is object and what is background
      (their object voxels enter the loss as the sum of the object classes) and learns the split between the classes
      from the labelled slices alone, where a registration chain carries a painted split only as far as it reaches
      (the hippocampus' anterior part barely crosses its central slice); ``auto``: ``ground-truth`` when several
      volumes are labelled (a cohort's painted slices show the classes at many positions), ``propagated`` for one
      (a single-scan job: one painted slice shows the split in one place). One object class: no effect.
    * ``class_axes`` (several final networks, several object classes): which networks split the object into its
      classes in a prediction, all of them finding the object: ``all`` (their averaged softmax, as before), a list
      of final axes (e.g. ``1,2``), or ``auto``: the axes other than the labelled one where ``pseudo_classes`` learns
      the split from the labelled slices. Networks across the labelled slices see every painted slice whole, yet
      split the hippocampus worse than those that see the paint as one row of each slice and the object lengthwise.
    * ``class_parts`` (a cohort model with several object classes, ``postprocess`` lcc or lcc-fill; a single-scan job
      keeps every island): ``on`` stores with the model how many parts each class forms in the training targets, and
      a prediction's largest-component step keeps that many per class, the smaller islands of a class taking their
      most probable other object class (the object is unchanged); ``off`` keeps every island; ``auto``: ``on`` where
      ``class_axes`` has some networks split the classes.
    * ``context``: each segmentation network (semi branch, final networks) sees that many neighbouring slices on
      either side of the slice it labels, as extra input channels (2.5D; 0: the paper, one slice).
    * ``refine``: self-training rounds after the final stage (0: the paper, none). Each round the final network(s)
      label every training volume (``postprocess`` applied, labelled slices kept), and new final networks learn
      from those labels: ``refine_targets=network`` the networks' labels alone, ``fused`` those labels fused with
      the registration branch's by ``fusion``, ``classes`` the previous targets with each object voxel's class from
      the networks (:mod:`.refine`). Each round costs one more final stage.
    """

    branches: str = "both"
    registration: str = "network"
    reg_iterations: int = 200
    reg_batch_size: int = 16
    reg_learning_rate: float = 1e-3
    reg_channels: str = "8,16,32,64"
    reg_similarity: str = "lncc"
    reg_smoothness: float = 1.0
    reg_regularizer: str = "bending"
    reg_integration_steps: int = 7
    demons_iterations: int = 100
    propagate_workers: int = 0
    propagate_options: str = ""
    propagate_cache: str = ""
    propagate_targets: str = "argmax"
    demons_smoothing: float = 1.0
    open_end: float = 0.0
    intensity: str = "none"
    epoch_iterations: int = 10
    semi_epochs: int = 30
    k1: int = 10
    k2: int = 20
    alpha_f: float = 3.0
    gamma: float = 1.0
    fusion: str = "weighted"
    beta: float = 0.5
    gamma_uncertain: float = 0.1
    final_iterations: int = 0
    final_axes: str = "0"
    final_seeds: int = 1
    confidence: float = 0.0
    object_threshold: float = 0.0
    postprocess: str = "none"
    augment: bool = True
    refine: int = 0
    prediction_threshold: str = "0"
    refine_targets: str = "network"
    context: int = 0
    pseudo_classes: str = "propagated"
    class_axes: str = "all"
    class_parts: str = "off"

    @property
    def uses_semi(self) -> bool:
        return self.branches in ("both", "semi")

    @property
    def uses_registration(self) -> bool:
        return self.branches in ("both", "registration")

    def split_from_labelled(self, volumes: int, num_classes: int) -> bool:
        """Whether the final networks learn the split between object classes from the labelled slices alone
        (``pseudo_classes``; ``num_classes`` counts the background): never with one object class, where the object
        loss is the full loss and a term of their own would only weight the labelled slices up."""
        if num_classes <= 2:
            return False
        return self.pseudo_classes == "ground-truth" or (self.pseudo_classes == "auto" and volumes > 1)

    def class_members(self, volumes: int, num_classes: int) -> tuple[int, ...]:
        """The final networks (numbers in ``member_axes``) whose softmax alone splits the object classes in a
        prediction (``class_axes``; the object itself comes from all of them); () where all share it, as the paper's
        one network does. ``auto``: the networks across the other axes than the labelled one where the split is
        learnt from the labelled slices (:meth:`split_from_labelled`), all elsewhere."""
        if len(self.member_axes) < 2 or num_classes <= 2 or self.class_axes == "all":
            return ()
        if self.class_axes == "auto":
            if not self.split_from_labelled(volumes, num_classes):
                return ()
            wanted = {axis for axis in self.axes if axis != 0}
        else:
            wanted = set(slice_axes(self.class_axes, "class_axes"))
        members = tuple(number for number, axis in enumerate(self.member_axes) if axis in wanted)
        return () if len(members) == len(self.member_axes) else members

    def counts_class_parts(self, volumes: int, num_classes: int) -> bool:
        """Whether a model stores how many parts each object class forms in its training targets, so that its
        largest-component step keeps that many per class (``class_parts``; needs ``postprocess`` lcc or lcc-fill).
        ``auto``: where some networks alone split the classes (:meth:`class_members`)."""
        if num_classes <= 2 or "lcc" not in self.postprocess or self.class_parts == "off":
            return False
        return self.class_parts == "on" or bool(self.class_members(volumes, num_classes))

    @property
    def fixed_threshold(self) -> float | None:
        """``prediction_threshold`` as a number, or None for ``auto`` (measured per model)."""
        return None if self.prediction_threshold == "auto" else float(self.prediction_threshold)

    @property
    def axes(self) -> tuple[int, ...]:
        """``final_axes`` as array axes of the scan (0: across the labelled slices, the paper), each once."""
        return slice_axes(self.final_axes, "final_axes")

    @property
    def member_axes(self) -> tuple[int, ...]:
        """The axis of each final network: ``axes`` once per seed of ``final_seeds``."""
        return self.axes * self.final_seeds

    def registration_config(self) -> RegistrationConfig:
        channels = tuple(int(c) for c in str(self.reg_channels).split(",") if c.strip())
        return RegistrationConfig(channels=channels, iterations=self.reg_iterations, batch_size=self.reg_batch_size,
                                  learning_rate=self.reg_learning_rate, similarity=self.reg_similarity,
                                  regularizer=self.reg_regularizer, smoothness=self.reg_smoothness,
                                  integration_steps=self.reg_integration_steps)

    def propagate_extra(self) -> dict:
        """``propagate_options`` as the ``propagate`` method's option dict (``key=value;key=value``; its own
        settings convert each value to the option's type)."""
        pairs = [item.partition("=") for item in str(self.propagate_options).split(";") if item.strip()]
        if any(not equals or not key.strip() for key, equals, _ in pairs):
            raise SparseSegError(f"propagate_options {self.propagate_options!r} must be key=value pairs",
                                 'E.g. propagate_options="iterations=200;end_opening=0.2".')
        return {key.strip(): value.strip() for key, _, value in pairs}

    def alpha(self, epoch: int) -> float:
        """The paper's Eq. 3: 0 before ``k1``, linear to ``alpha_f`` at ``k2``, then ``alpha_f``."""
        if epoch < self.k1:
            return 0.0
        if epoch >= self.k2:
            return float(self.alpha_f)
        return float(self.alpha_f) * (epoch - self.k1) / max(1, self.k2 - self.k1)

    @classmethod
    def parse(cls, extra: dict | None, preset: dict | None = None, method: str = "collaborative") -> CollaborativeSettings:
        """Settings from a method-options dict over ``preset`` (none: the paper's); unknown keys and bad values are
        errors that say what is allowed."""
        return parse_settings(cls, {**(preset or {}), **(extra or {})}, method)

    def check(self) -> None:
        for name, allowed in (("branches", BRANCHES), ("registration", REGISTRATIONS), ("fusion", FUSIONS),
                              ("intensity", INTENSITIES), ("postprocess", POSTPROCESSING),
                              ("reg_similarity", SIMILARITIES), ("reg_regularizer", REGULARIZERS)):
            if getattr(self, name) not in allowed:
                raise SparseSegError(f"unknown {name} {getattr(self, name)!r}", f"Use one of: {', '.join(allowed)}.")
        if self.propagate_options:
            from ..propagate.settings import PropagateSettings

            PropagateSettings.parse(self.propagate_extra())  # an unknown or badly typed key fails before any work
        if self.propagate_workers < 0:
            raise SparseSegError("option propagate_workers must not be negative", "Give 0 (one per core) or more.")
        for name in ("reg_iterations", "reg_batch_size", "demons_iterations", "epoch_iterations", "semi_epochs",
                     "final_seeds"):
            if getattr(self, name) < 1:
                raise SparseSegError(f"option {name} must be at least 1, not {getattr(self, name)}", f"Give {name} >= 1.")
        if not 0 <= self.k1 <= self.k2:
            raise SparseSegError(f"need 0 <= k1 <= k2, not k1={self.k1}, k2={self.k2}", "E.g. k1=10 k2=20.")
        slice_axes(self.final_axes, "final_axes")  # raises on a bad list
        if self.class_parts not in ("auto", "on", "off"):
            raise SparseSegError(f"unknown class_parts {self.class_parts!r}", "Use class_parts=auto, on or off.")
        if self.class_axes not in ("all", "auto") and not set(slice_axes(self.class_axes, "class_axes")) <= set(self.axes):
            raise SparseSegError(f"class_axes {self.class_axes!r} names an axis without a final network (final_axes "
                                 f"{self.final_axes!r})", 'Give axes of final_axes, e.g. class_axes="1,2", or all / auto.')
        if self.propagate_targets not in ("argmax", "labels"):
            raise SparseSegError(f"unknown propagate_targets {self.propagate_targets!r}",
                                 "Use propagate_targets=labels (the single-scan default's own labels) or argmax.")
        if self.registration == "propagate" and self.propagate_targets == "labels" and self.object_threshold > 0:
            raise SparseSegError("object_threshold thresholds the branch's probabilities, but propagate_targets=labels "
                                 "hands on the single-scan default's labels",
                                 'Give its threshold instead (propagate_options="object_threshold=0.8"), or use '
                                 "propagate_targets=argmax.")
        if self.pseudo_classes not in PSEUDO_CLASSES:
            raise SparseSegError(f"unknown pseudo_classes {self.pseudo_classes!r}",
                                 f"Use one of: {', '.join(PSEUDO_CLASSES)}.")
        if self.context < 0:
            raise SparseSegError(f"option context must not be negative, not {self.context}",
                                 "Give the neighbouring slices on each side the networks see (0: the slice alone).")
        if self.refine < 0:
            raise SparseSegError(f"option refine must not be negative, not {self.refine}",
                                 "Give the number of self-training rounds (0: none).")
        if self.refine_targets not in REFINE_TARGETS:
            raise SparseSegError(f"unknown refine_targets {self.refine_targets!r}",
                                 f"Use one of: {', '.join(REFINE_TARGETS)}.")
        if not 0 <= self.object_threshold < 1:
            raise SparseSegError(f"option object_threshold must be in [0, 1), not {self.object_threshold}",
                                 "Give e.g. object_threshold=0.7 (0: the most likely class).")
        if self.prediction_threshold != "auto":
            try:
                fixed = float(self.prediction_threshold)
            except ValueError:
                fixed = -1.0
            if not 0 <= fixed < 1:
                raise SparseSegError(f"option prediction_threshold must be auto or in [0, 1), not "
                                     f"{self.prediction_threshold!r}",
                                     "Give prediction_threshold=auto (matched to the training targets' volume), a "
                                     "number such as 0.7, or 0 (the most likely class).")
        if not 0 <= self.confidence < 1:
            raise SparseSegError(f"option confidence must be in [0, 1), not {self.confidence}",
                                 "Give e.g. confidence=0.9 (0: keep every propagated voxel).")
        for name in ("alpha_f", "gamma", "beta", "gamma_uncertain", "open_end", "reg_smoothness", "final_iterations"):
            if getattr(self, name) < 0:
                raise SparseSegError(f"option {name} must not be negative", f"Give {name} >= 0.")
        try:
            channels = tuple(int(c) for c in str(self.reg_channels).split(",") if c.strip())
        except ValueError:
            channels = ()
        if len(channels) < 2 or min(channels) < 1:
            raise SparseSegError(f"reg_channels {self.reg_channels!r} must list at least two positive widths",
                                 'E.g. reg_channels="8,16,32,64".')
