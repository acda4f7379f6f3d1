"""Incremental 2D self-labelling (Anderson et al., BMC Medical Imaging 2025; ../shared/docs/methods.md section 2).

One annotated slice per training volume (the central one). A 2D U-Net is trained on the ground-truth
slices (round 1, with flips + rotations), then, round after round, it predicts the next slices on both
sides of the labelled block of every volume (``k`` of the depth per round), keeps the confident pixels
as pseudo-labels (threshold ``theta``) and is fine-tuned on ground truth + pseudo-labels, until every
slice of every volume is labelled. Ground truth is never overwritten.

Registered methods (:mod:`.method`; all share :class:`SelfLabellingLoop`, a :class:`~..common.RoundLoop`):

* ``self-labelling-faithful``: the paper: plain U-Net 8-16-32-64 / 128 with dropout 0.5, binary
  (classes merged) with BCE, RMSprop 1e-3 with LR x0.1 on plateau, early stopping on the validation
  part with the best weights carried to the next round, augmentation on the first model only,
  pseudo-labels frozen once added, threshold read as the code does (``binarise``: p < theta -> background).
* ``self-labelling-random``: the same, adding randomly chosen slices instead of growing outwards.
* ``self-labelling``: our improved default (:data:`~.presets.IMPROVED`, chosen by the explorations in
  docs/results/self-labelling.md): for cohorts two runs labelling together (``co_labelling``), epochs three
  times the budget's length (``epoch_scale``).

The earlier defaults (v1-v6) and the ablation rows are option sets of these (:data:`~.presets.RETIRED_NAMES`;
the table "old name -> options" is in docs/results/self-labelling.md). Every setting can be overridden through
``MethodOptions.extra`` (``--option KEY=VALUE``, a job's ``method_options``); unknown keys are an error. The rounds
stream through the worker (one volume, a full prediction per round: :mod:`.job`) and run for cohorts through
``sparseseg train/predict/bench`` (:mod:`.cohort`).

Modules, one job each: :mod:`.settings` (options, budgets), :mod:`.presets` (registered and retired presets),
:mod:`.schedule` (which slices, how many rounds, slice weights), :mod:`.pseudo_labels` (probabilities ->
targets), :mod:`.slices` (2D prediction and augmentation), :mod:`.labelling` / :mod:`.training` /
:mod:`.fusion` (the parts of a round), :mod:`.loop` (the rounds), :mod:`.cohort` and :mod:`.job` (the two entry
points), :mod:`.method` (the registry entries).
"""

from __future__ import annotations

from .cohort import HOLD_OUT_FROM
from .fusion import average_runs
from .job import job_frame, painted_axis, transpose_case
from .loop import SelfLabellingLoop
from .method import SelfLabelling, SelfLabellingFaithful, SelfLabellingRandom
from .presets import FAITHFUL, IMPROVED, RANDOM, RETIRED_NAMES, option_lines
from .pseudo_labels import (distance_to, erosion_at, follow_footprint, inner_neighbour, postprocessed_proposal,
                            pseudo_labels, relabel_proposal)
from .schedule import natural_rounds, next_slices, per_side, rounds_needed, slice_weights
from .settings import BUDGET_SETTINGS, Settings, labelling_alone, resolve_settings
from .slices import predict_slices, rotate_batch

__all__ = ["BUDGET_SETTINGS", "FAITHFUL", "HOLD_OUT_FROM", "IMPROVED", "RANDOM", "RETIRED_NAMES", "SelfLabelling",
           "SelfLabellingFaithful", "SelfLabellingLoop", "SelfLabellingRandom", "Settings", "average_runs",
           "distance_to", "erosion_at", "follow_footprint", "inner_neighbour", "job_frame", "labelling_alone",
           "natural_rounds", "next_slices", "option_lines", "painted_axis", "per_side", "postprocessed_proposal",
           "predict_slices", "pseudo_labels", "relabel_proposal", "resolve_settings", "rotate_batch", "rounds_needed",
           "slice_weights", "transpose_case"]
