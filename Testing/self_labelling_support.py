"""Helpers shared by the self-labelling test files: a tiny training schedule and a loop built from it."""

from __future__ import annotations

from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.self_labelling import SelfLabellingLoop

#: A few steps per round: enough for the mechanics, seconds per test on a CPU.
#: One run of 2D networks, not the default's co-labelled ensemble of two with a 3D student (each has its own test).
TINY = {"epoch_iterations": 3, "first_epochs": 2, "round_epochs": 1, "batch_size": 4, "ensemble": 1, "student_3d": False}


def new_loop(cases, name="self-labelling", total_rounds=None, stream=False, **extra) -> SelfLabellingLoop:
    """A self-labelling loop over ``cases`` with the tiny schedule (``extra`` options on top)."""
    method = get_method(name)
    options = MethodOptions(budget="quick", seed=3, device="cpu", extra={**TINY, **extra})
    settings = method.settings(options)
    segmenter = method.build(cases, options, settings)
    return SelfLabellingLoop(name, segmenter, cases, options, SilentReporter(), settings, stream=stream,
                             total_rounds=total_rounds)
