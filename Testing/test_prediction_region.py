"""The networks of ``propagate``'s network round predict only the box where the fusion can still call a voxel object
(:func:`SparseSegLib.methods.propagate.fusion.prediction_region`): the box rule on small arrays, and on the bundled
real sample scan a fused result as good as the one from predicting the whole crop."""

from __future__ import annotations

import numpy as np
import torch

from SparseSegLib.engine.propagation import PropagationSettings, propagate_slices, slice_distance
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.propagate import _embedded
from SparseSegLib.methods.propagate.fusion import fuse, prediction_region
from SparseSegLib.methods.propagate.network import train_across_axes, training_targets
from SparseSegLib.methods.propagate.settings import PropagateSettings
from SparseSegLib.methods.propagate.volume import PaintedVolume


def test_the_box_holds_every_voxel_the_fusion_can_call_object_with_its_context():
    registration = np.zeros((2, 20, 30, 40), np.float32)
    registration[1, 5:8, 10:12, 20:25] = 0.9
    registration[1, 12, 15, 30] = 0.25  # just above 2 * 0.6 - 1: the network could still tip it
    registration[1, 2, 2, 2] = 0.15  # below: object nowhere whatever the network says
    registration[0] = 1.0 - registration[1]
    box = prediction_region(registration, 0.6, 3)
    assert box == (slice(2, 16), slice(7, 19), slice(17, 34))
    assert prediction_region(registration, 0.6, 100) == (slice(0, 20), slice(0, 30), slice(0, 40))
    empty = np.zeros_like(registration)
    empty[0] = 1.0
    assert prediction_region(empty, 0.6, 3) is None


def test_predicting_the_box_gives_the_fused_result_of_predicting_everything(sample_case):
    label = sample_case.label
    present = np.flatnonzero((label > 0).any(axis=(1, 2)))
    annotated = np.zeros(label.shape, bool)
    annotated[int((present[0] + present[-1]) // 2)] = True
    settings = PropagateSettings(iterations=30, batch_size=4)
    volume = PaintedVolume.from_case(sample_case.with_annotation(annotated), settings)
    registration = propagate_slices(volume.image, volume.label, volume.painted, 3, PropagationSettings(100, 1.0))
    target, weight = training_targets(volume.label, volume.painted, registration,
                                      slice_distance(volume.image.shape[0], volume.painted), settings)
    region = prediction_region(registration, settings.object_threshold, 2)  # the sample is small: little context
    assert region is not None and np.prod([s.stop - s.start for s in region]) < volume.image.size  # a real box
    results = []
    for box in (None, region):
        network, _ = train_across_axes(volume.image, target, weight, 3, settings, 0, torch.device("cpu"),
                                       SilentReporter(), "test", initial=None, region=box)
        network = network if box is None else _embedded(network, box, registration)
        results.append(fuse(network, registration, "average", threshold=settings.object_threshold)[0])
    whole, boxed = (result > 0 for result in results)
    reference = label[(slice(None),) + volume.window] > 0  # painted along axis 0: the frame is the scan's, cropped

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return float(2 * (a & b).sum() / (a.sum() + b.sum()))

    # the windows sit elsewhere (and the instance norm sees other pixels), so not bit for bit: as good, and alike
    assert dice(boxed, reference) > dice(whole, reference) - 0.03
    assert dice(whole, boxed) > 0.9
