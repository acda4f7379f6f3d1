"""The presets behind the registered names, and the retired names as option sets of those.

``self-labelling`` (our improved default, :data:`IMPROVED`), ``self-labelling-faithful`` (the paper,
:data:`FAITHFUL`) and ``self-labelling-random`` are what a user chooses. The configurations the default grew
through (v1-v6) and the ablation rows were method names once; they are kept here as history (``IMPROVED_V1`` ..
``IMPROVED_V6``: how each stop changed the one before, with the measurement that decided it) and as
:data:`RETIRED_NAMES`, the ``--option`` lines that reproduce each on a registered name, so that every row of
docs/results/self-labelling.md can still be run. ``Testing/test_self_labelling.py`` checks that each retired name's
options resolve to exactly the settings its preset gave.
"""

from __future__ import annotations

import json

#: The paper's settings.
FAITHFUL: dict = {}
#: The first improved configuration, benchmarked with its ablation rows (docs/results/self-labelling.md): EMA teacher and 2.5D on.
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
#: merged Dice 0.63 ± 0.30), and the average of the two held 0.78 ± 0.04 (docs/results/self-labelling.md).
IMPROVED_V5: dict = {**IMPROVED_V4, "fusion_passes": 4, "ensemble": 2}
#: The sixth (issue 6, fifth stop): v5 with the two runs labelling together (every slice decided by their
#: averaged networks: the classes separate far better, anterior 0.19 -> 0.34), a 3D student trained on the final
#: model's pseudo-labels as the model (+0.008 / +0.012 merged Dice on two training-seed pairs), and theta 0.6: the
#: averaged networks are less sure than one at a structure's ends, where theta 0.7 left them under-segmented
#: (docs/results/self-labelling.md, fourth exploration).
#: A run that labels alone (a worker job; ``ensemble=1``) keeps theta 0.7: one network is surer than the average, and
#: at 0.6 one v4 run over-ran a cohort's ends (0.753 against 0.786, second exploration); on 15 single-volume jobs the
#: two thresholds score alike (0.429 / 0.419 Dice, paired difference 0.010 ± 0.098; docs/results/self-labelling.md).
IMPROVED_V6: dict = {**IMPROVED_V5, "co_labelling": True, "student_3d": True, "theta": 0.6, "solo_theta": 0.7}
#: Our improved default (issue 6, seventh stop): v6 with epochs three times the budget's length for the labelling
#: network (the fusion networks keep their training), and no 3D student. v6 scored 0.817 / 0.731 / 0.668 on three
#: training-seed pairs: its chains start from a first model of 160 iterations (validation Dice 0.09-0.42) and on two
#: pairs of three under-labelled from round 2 on (0.60x the true foreground by round 8); with three times the
#: training the pseudo-labels of all three pairs hold 0.89-0.93x it, Dice 0.84-0.85 after round 5 (v6: 0.71-0.77),
#: and the averaged 2D models score 0.846 / 0.833 / 0.802, which the 3D student no longer improves (0.830 / 0.828 /
#: 0.799) at about 10 more minutes (docs/results/self-labelling.md, sixth exploration). Worker jobs (budget quick) gain too: 0.625 against
#: 0.390 Dice on 7 single-volume jobs, better on each, at about twice the time per job.
IMPROVED: dict = {**IMPROVED_V6, "epoch_scale": 3, "student_3d": False}
#: The paper's random expansion: faithful, adding randomly chosen slices instead of growing outwards.
RANDOM: dict = {**FAITHFUL, "order": "random"}

#: Retired method names -> (the registered name, the options that reproduce it: ``--option KEY=VALUE`` each, a job's
#: ``method_options``). Each set takes the registered preset back to the retired one field by field.
RETIRED_NAMES: dict[str, tuple[str, dict]] = {
    "self-labelling-v6": ("self-labelling", {"epoch_scale": 1, "student_3d": True}),
    "self-labelling-v5": ("self-labelling", {"co_labelling": False, "theta": 0.7, "solo_theta": 0, "epoch_scale": 1}),
    "self-labelling-v4": ("self-labelling", {"co_labelling": False, "theta": 0.7, "solo_theta": 0, "epoch_scale": 1,
                                             "ensemble": 1, "fusion_passes": 3}),
    "self-labelling-v3": ("self-labelling", {"co_labelling": False, "theta": 0.7, "solo_theta": 0, "epoch_scale": 1,
                                             "ensemble": 1, "fusion_passes": 1, "continuity": 0, "continuity_erode": 0,
                                             "relabel_postprocess": False}),
}
_V2 = {**RETIRED_NAMES["self-labelling-v3"][1], "weighting": "uniform", "fuse_axes": False}
RETIRED_NAMES.update({
    "self-labelling-v2": ("self-labelling", _V2),
    "self-labelling-v1": ("self-labelling", {**_V2, "ema": 0.99}),
    "self-labelling-no-ema": ("self-labelling", _V2),  # v1 without its EMA teacher is v2
    "self-labelling-no-refresh": ("self-labelling", {**_V2, "ema": 0.99, "refresh": False}),
    "self-labelling-no-context": ("self-labelling", {**_V2, "ema": 0.99, "context": 0}),
    "self-labelling-no-ema-no-context": ("self-labelling", {**_V2, "context": 0}),
    "self-labelling-faithful-ignore": ("self-labelling-faithful", {"threshold": "ignore"}),
})

#: What each retired name ran (its preset), for the check above.
RETIRED_PRESETS: dict[str, dict] = {
    "self-labelling-v6": IMPROVED_V6, "self-labelling-v5": IMPROVED_V5, "self-labelling-v4": IMPROVED_V4,
    "self-labelling-v3": IMPROVED_V3, "self-labelling-v2": IMPROVED_V2, "self-labelling-v1": IMPROVED_V1,
    "self-labelling-no-ema": {**IMPROVED_V1, "ema": 0.0}, "self-labelling-no-refresh": {**IMPROVED_V1, "refresh": False},
    "self-labelling-no-context": {**IMPROVED_V1, "context": 0},
    "self-labelling-no-ema-no-context": {**IMPROVED_V1, "ema": 0.0, "context": 0},
    "self-labelling-faithful-ignore": {**FAITHFUL, "threshold": "ignore"},
}


def option_lines(name: str) -> str:
    """A retired name's options as ``--option KEY=VALUE`` arguments (values as ``--option`` reads them back)."""
    _, options = RETIRED_NAMES[name]
    return " ".join(f"--option {key}={value if isinstance(value, str) else json.dumps(value)}"
                    for key, value in options.items())
