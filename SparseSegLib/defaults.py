"""The one set of defaults for a single-scan job: what the Slicer module's Start button runs and what
``sparseseg run`` runs without ``--method`` / ``--rounds``.

Defined here once so the module, the session, the CLI and the interactive benchmark cannot drift apart; the
interactive benchmark (``python -m SparseSegLib.benchmarks.interactive``) is where these values are chosen.
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
