"""Registering a volume's neighbouring slice pairs in several processes (real SimpleITK demons, real spawned
processes, the bundled sample scan): the chain asks for exactly the prefetched pairs, the result is the same bit for
bit as in one process, and a stop request cancels the pool."""

from __future__ import annotations

import numpy as np
import pytest

from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.propagation import PropagationSettings, SliceRegistration, chain_pairs, propagate_slices
from SparseSegLib.engine.slice_registration import (RegistrationCancelled, demons_field, demons_fields, field_transform,
                                                     slice_transform)
from SparseSegLib.engine.trainer import TrainingCancelled

SETTINGS = PropagationSettings(iterations=20, smoothing=1.0)


class RecordingRegistration(SliceRegistration):
    """Records the pairs the chain asks for, and those registered on demand (reached but not prefetched)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[tuple[int, int]] = []
        self.on_demand: list[tuple[int, int]] = []

    def transform(self, source: int, target: int):
        self.asked.append((source, target))
        if (source, target) not in self._cache:
            self.on_demand.append((source, target))
        return super().transform(source, target)


def painted_slices(label: np.ndarray) -> list[int]:
    present = np.flatnonzero((label > 0).any(axis=(1, 2)))
    return [int(present[len(present) // 3]), int(present[2 * len(present) // 3])]


def test_chain_pairs_are_the_pairs_the_chain_warps_along_and_progress_counts_them(sample_case):
    image, label = normalize(sample_case.image), sample_case.label
    painted = painted_slices(label)
    registration = RecordingRegistration(image, SETTINGS)  # one worker: prefetched one after the other
    reported = []
    propagate_slices(image, label, painted, 3, registration=registration,
                     progress=lambda done, total: reported.append((done, total)))
    assert sorted(registration.asked) == sorted(chain_pairs(painted, image.shape[0])) and registration.on_demand == []
    low, high = painted
    assert len(set(registration.asked)) == len(registration.asked) == image.shape[0] - 3 + high - low
    pairs = len(registration.asked)
    assert reported == [(done, pairs) for done in range(1, pairs + 1)]  # every pair, in order, before the chain
    assert chain_pairs([0], 3) == [(0, 1), (1, 2)] and chain_pairs([1, 2], 4) == [(1, 0), (2, 3)]


def test_two_processes_give_the_same_result_bit_for_bit_and_nothing_is_left_for_the_chain(sample_case):
    image, label = normalize(sample_case.image), sample_case.label
    painted = painted_slices(label)
    alone = propagate_slices(image, label, painted, 3, SETTINGS)
    parallel = RecordingRegistration(image, SETTINGS, workers=2)
    reported = []
    together = propagate_slices(image, label, painted, 3, registration=parallel,
                                progress=lambda done, total: reported.append((done, total)))
    assert parallel.on_demand == []
    pairs = len(chain_pairs(painted, image.shape[0]))
    assert reported[-1] == (pairs, pairs) and all(b[0] > a[0] for a, b in zip(reported, reported[1:]))
    np.testing.assert_array_equal(alone, together)
    # the array round trip is the transform slice_transform always gave (self-labelling's continuity uses it)
    fixed, moving = image[painted[0] + 1], image[painted[0]]
    point = (3.25, 4.5)
    direct = slice_transform(fixed, moving, 20, 1.0).TransformPoint(point)
    assert field_transform(demons_field(fixed, moving, 20, 1.0)).TransformPoint(point) == direct


def test_a_stop_request_cancels_the_registration_processes(sample_case):
    """The pool itself stops (the chain's own per-slice check would raise too, so it is tested on the pool), and a
    propagation asked to stop while its pairs are registered ends as a cancelled training does."""
    image, label = normalize(sample_case.image), sample_case.label
    pairs = [(image[k + 1], image[k]) for k in range(image.shape[0] - 1)]
    asked = []

    def stop() -> bool:
        asked.append(True)
        return True

    with pytest.raises(RegistrationCancelled):
        demons_fields(pairs, 100, 1.0, workers=2, should_stop=stop)
    assert asked  # polled while the processes worked, not after every pair was done
    with pytest.raises(TrainingCancelled):
        propagate_slices(image, label, painted_slices(label), 3, SETTINGS, should_stop=lambda: True, workers=2)
