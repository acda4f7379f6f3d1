"""Gradual Learning: grow the labelled regions round by round with the network's own pseudo-labels.

3D Gradual Learning (Engster et al., MIDL 2025 short paper; ../shared/docs/methods.md section 1) and
its 2D slice-stack form (Engster et al., MIDL 2024), as one :class:`~SparseSegLib.methods.common.RoundLoop`.

Round 1 is the paper's "GL repetition 0": the network trains on the ground truth of the annotated
regions only (n non-overlapping boxes, or the slices / boxes a user painted). Every later round ``r``:

1. every annotated region is grown by ``step`` voxels in every direction (3D form; the 2D form grows
   across the painted slices only, along the axis they were painted along: :mod:`.slice_axis`), clipped at
   the volume border; after ``r - 1`` growths a region is the Chebyshev dilation of the annotated mask by
   ``(r - 1) * step`` voxels (:mod:`.regions`);
2. the current network predicts the grown regions with sliding-window inference (default: each grown
   region's bounding box on its own, softmax averaged where grown boxes overlap, as the paper applies
   the model "on the expanded subvolume"; option ``predict="volume"`` uses the whole-volume prediction);
3. the predicted voxels of the grown regions become pseudo-labels where the network is confident and
   their foreground is connected to the painted foreground (:mod:`.pseudo_labels`); ground-truth voxels,
   the painted slices' background included, are never overwritten;
4. the network trains on ground truth + pseudo-labels with random crops inside the grown regions;
5. the whole volume is predicted and streamed as the round's result.

The run ends after ``options.rounds`` rounds (the paper's R = 10 repetitions is ``rounds = 11``) or,
with ``stop_when_covered`` (default), after the first round that trained on the whole volume.

Network: ``options.network`` picks the form. ``3d``: MONAI 3D U-Net on random crops (``patch_size``;
the paper's 64^3 inside 80^3 boxes) taken inside the grown regions. ``2d``: the original slice-stack
Gradual Learning, a 2D U-Net on slices across the painted axis (the annotation's whole-slice axis; axis 0
for boxes), regions grown slice by slice along it.

Method options (``options.extra``; job.json ``parameters.method_options``; ``--method-option KEY=VALUE``):

``step``           voxels grown per round (int) or ``"auto"`` (default): for box regions 1/10 of the mean
                   box edge (the paper's s = 8 for 80^3 boxes); for thin regions (slices) the growth that
                   covers the volume in the planned rounds, ``ceil(max distance / (rounds - 1))``.
``grow_axes``      ``"all"`` (3D default) or ``"slice"`` (grow across the painted slices only; 2D default).
``relabel``        ``"repredict"`` (default, recommended by methods.md: every non-GT voxel of the grown
                   region is predicted afresh each round) or ``"freeze"`` (earlier pseudo-labels are kept;
                   only newly reached voxels are predicted).
``confidence``     0.7 (default) or another threshold in (0, 1): voxels whose top softmax probability is below
                   it stay unknown for that round; ``none`` = hard argmax pseudo-labels (the paper's reading).
``anchor``         True (default): only 3D components of the pseudo-label foreground that touch painted
                   foreground become targets (the rest stays unknown); False = no component filter (the paper).
``restart``        False (default: fine-tune the same network every round, cheaper) or True (a freshly
                   initialised network each round, seeded).
``predict``        ``"regions"`` (default) or ``"volume"`` (see step 2).
``crops``          ``"regions"`` (default: uniformly random crops inside a grown region, as the paper) or
                   ``"labelled"`` (the project's foreground-balanced sampler centred on labelled voxels).
``stop_when_covered``  True (default) or False.
``rounds``         rounds for ``sparseseg train/bench`` when ``options.rounds`` is 1 (default 11 = paper).

``confidence=none anchor=false`` reproduce the papers' pseudo-labels. Every option that ran is logged at the
start and stored in each round's metrics (``gradual``), with the painted axis (``slice_axis``) and what the
filters left unknown (``unconfident_voxels``, ``unanchored_voxels``).
"""

from __future__ import annotations

from .loop import GradualLoop
from .method import GradualLearning
from .pseudo_labels import pseudo_label_target
from .regions import RegionPatchSampler, auto_step, cover_distance, grow_box, grow_mask, region_boxes
from .settings import CHOICES, DEFAULT_CONFIDENCE, DEFAULTS, PAPER_ROUNDS, GradualSettings, parse_settings
from ..common import across_axis
from .slice_axis import painted_axis

__all__ = ["CHOICES", "DEFAULTS", "DEFAULT_CONFIDENCE", "PAPER_ROUNDS", "GradualLearning", "GradualLoop",
           "GradualSettings", "RegionPatchSampler", "across_axis", "auto_step", "cover_distance", "grow_box",
           "grow_mask", "painted_axis", "parse_settings", "pseudo_label_target", "region_boxes"]
