"""The defaults, defined once: what the Slicer module's Start button runs and what ``sparseseg run`` runs without
``--method`` / ``--rounds`` (one scan), and what ``sparseseg train`` runs without ``--method`` / ``--budget`` (a cohort).

Defined here so the module, the session, the CLI and the benchmarks cannot drift apart. The single-scan values are
chosen on the interactive benchmark (``python -m SparseSegLib.benchmarks.interactive``), the cohort ones on the
validation parts of the left-atrium and hippocampus splits (docs/results/cohort-default.md).
"""

from __future__ import annotations

#: The method Start runs.
START_METHOD = "propagate"

#: job.json parameters Start sets (the schema fills in the rest). ``rounds`` None: the method decides how many
#: rounds it needs to finish (e.g. until every slice is labelled), instead of a count that stops half way.
_START_PARAMETERS: dict = {"rounds": None}


def start_parameters() -> dict:
    """A fresh copy of the Start button's job parameters."""
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in _START_PARAMETERS.items()}


#: The method ``sparseseg train`` runs on a cohort with sparse annotation. ``collaborative`` (each training scan's
#: paint propagated by the single-scan default, then 2D networks across three axes) against ``self-labelling``, both at
#: the paper budget, on the validation parts only (rule fixed before the second was measured): left atrium 80.2 vs
#: 64.7 Dice, hippocampus 79.9 vs 83.0; mean 80.0 vs 73.9 (docs/results/cohort-default.md). Before: ``sparse-only``,
#: the baseline that learns from the painted voxels alone.
TRAIN_METHOD = "collaborative"

#: ``sparseseg train``'s budget: ``paper`` trains to convergence, which the validation figures above were measured
#: at. ``quick`` cost the hippocampus 5.9 points (79.9 -> 74.0): its networks train 300 steps instead of 1500, which
#: saves about 7 minutes next to the half hour that propagating 140 training scans takes on two cores. ``sparseseg
#: bench`` keeps ``quick`` (a first look at many methods).
TRAIN_BUDGET = "paper"
