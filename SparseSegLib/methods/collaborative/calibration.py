"""``prediction_threshold=auto``: the object threshold at which the final networks reproduce their targets' volume.

Trained on pseudo-labels with a Dice + CE loss, the final networks say object more often than their targets do:
on the left atrium's training volumes they labelled 10-21% more object voxels than the labels they learnt from,
on the hippocampus's 5% (sixteenth session, docs/results/collaborative-default.md). That excess is the networks'
own, and it grows on new volumes. A fixed threshold would encode one data set's excess (0.7 was best for the left
atrium's validation volumes and cost the hippocampus 4.6 points), so the threshold is measured per model instead: the
lowest one, from 0.5 up, at which the networks' object voxels over their own training volumes come closest to the
targets' count. It only ever tightens (a model that says object too rarely keeps the argmax, 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Candidate thresholds, and the histogram bins they are read from (object probability in steps of 0.01).
GRID = np.round(np.arange(0.50, 0.951, 0.01), 2)
BINS = 100


def object_histogram(probabilities: np.ndarray) -> np.ndarray:
    """Voxel counts of the object probability (one minus background) of ``(C, ...)`` probabilities, in 0.01 bins."""
    return np.histogram(1.0 - probabilities[0], bins=BINS, range=(0.0, 1.0))[0].astype(np.int64)


def voxels_above(histogram: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """Voxels whose object probability is at or above each threshold (multiples of 1 / BINS) of a histogram."""
    above = np.cumsum(histogram[::-1])[::-1]  # above[i]: voxels with object probability >= i / BINS
    return above[np.rint(np.asarray(thresholds) * BINS).astype(int)]


def matched_threshold(histogram: np.ndarray, target_voxels: int) -> float:
    """The lowest threshold of :data:`GRID` whose object count (voxels at or above it) is closest to
    ``target_voxels``."""
    counts = voxels_above(histogram, GRID)
    return float(GRID[int(np.argmin(np.abs(counts - int(target_voxels))))])


class ThresholdCalibration:
    """Accumulates the networks' object probabilities and the targets' object voxels over training volumes."""

    def __init__(self) -> None:
        self.histogram = np.zeros(BINS, np.int64)
        self.target_voxels = 0

    def add(self, probabilities: np.ndarray, target: np.ndarray) -> None:
        """One volume: the networks' ``(C, k, j, i)`` probabilities and its training target (object > 0)."""
        self.histogram += object_histogram(probabilities)
        self.target_voxels += int((target > 0).sum())

    def threshold(self) -> float:
        return matched_threshold(self.histogram, self.target_voxels)

    def record(self) -> dict:
        """What the training record keeps: the threshold, and the object voxels at 0.5 and at it over the targets."""
        threshold = self.threshold()
        ratio = lambda t: round(float(voxels_above(self.histogram, t)) / max(1, self.target_voxels), 4)  # noqa: E731
        return {"prediction_threshold": threshold, "object_ratio_at_0.5": ratio(0.5), "object_ratio": ratio(threshold)}


def measured_threshold(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """:meth:`ThresholdCalibration.record` over ``(probabilities, target)`` pairs, one per training volume."""
    calibration = ThresholdCalibration()
    for probabilities, target in pairs:
        calibration.add(probabilities, target)
    return calibration.record()


def calibrate(segmenter, scans: list, volumes: list, device) -> dict:
    """Set ``segmenter.object_threshold`` from its predictions on the training ``scans`` against their ``volumes``'
    targets (one volume in memory at a time); returns the record."""
    from .branches import predict_normalised

    record = measured_threshold((predict_normalised(segmenter, scan.image, device), volume.target)
                                for scan, volume in zip(scans, volumes))
    segmenter.object_threshold = record["prediction_threshold"]
    return record


__all__ = ["GRID", "ThresholdCalibration", "calibrate", "matched_threshold", "measured_threshold", "object_histogram",
           "voxels_above"]
