"""The ramps and schedules of the UA-MT reference code, as plain functions of the iteration.

Why ramps: early in training the teacher is as wrong as the student, so its targets must count little (the
consistency weight ramps up) and UA-MT must trust only its most certain voxels (the entropy threshold starts
low, at 0.75 ln 2, and rises to ln 2, where every voxel passes).
"""

from __future__ import annotations

import math


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = current / length`` clipped to [0, 1] (Laine & Aila; the reference's ramps)."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(float(current), 0.0), float(length)) / float(length)
    return float(math.exp(-5.0 * phase * phase))


def ramp_unit(iterations: int, rampup: float = 40.0) -> int:
    """Iterations per ramp "epoch": the reference counts ``iteration // 150`` over 40 of them in 6000 iterations,
    i.e. the ramp spans the whole run; a shorter run keeps that shape with ``iterations / 40`` per epoch."""
    return max(1, int(iterations // max(1.0, rampup)))


def consistency_weight(step: int, iterations: int, consistency: float = 0.1, rampup: float = 40.0) -> float:
    """The weight of the consistency loss at ``step``: ``consistency * sigmoid_rampup(step // unit, rampup)``."""
    return float(consistency) * sigmoid_rampup(step // ramp_unit(iterations, rampup), rampup)


def uncertainty_threshold(step: int, iterations: int, num_classes: int = 2, start: float = 0.75, end: float = 1.0) -> float:
    """UA-MT's entropy threshold ``(start + (end - start) * sigmoid_rampup(step, iterations)) * ln C`` (nats)."""
    return (start + (end - start) * sigmoid_rampup(step, iterations)) * math.log(max(2, num_classes))


def ema_alpha(step: int, decay: float = 0.99) -> float:
    """The teacher's EMA decay at update ``step`` (0-based): ``min(1 - 1/(step + 1), decay)``.

    Update 0 copies the student (alpha 0); the average then warms up like a true mean before settling at
    ``decay``, so an early teacher is not dominated by its random initial weights.
    """
    return min(1.0 - 1.0 / (step + 1), float(decay))


def learning_rate(step: int, iterations: int, base: float, schedule: str = "poly") -> float:
    """``poly``: ``base (1 - step/iterations)^0.9`` (the seed, SSL4MIS); ``step``: ``base * 0.1^(step // s)``
    with ``s = 2500 / 6000`` of the run (the UA-MT code's x0.1 every 2500 of 6000 iterations)."""
    if schedule == "poly":
        return float(base) * (1.0 - min(step, iterations) / max(1, iterations)) ** 0.9
    every = max(1, round(iterations * 2500 / 6000))
    return float(base) * 0.1 ** (step // every)
