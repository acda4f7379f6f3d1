"""``collaborative`` with ``pseudo_classes=ground-truth``: pseudo-labels teach object against background, the split
between object classes comes from the labelled slices; on the real sample scans and small tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.losses import MaskedDiceCELoss, MaskedObjectDiceCELoss
from SparseSegLib.engine.sampling import TrainingVolume
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.collaborative.branches import final_targets, scan_of
from SparseSegLib.methods.collaborative.fusion import CERTAIN, OBJECT_ONLY, classes_from_ground_truth
from SparseSegLib.methods.collaborative.propagated import Propagated
from SparseSegLib.methods.collaborative.refine import classed_volume
from SparseSegLib.methods.collaborative.settings import CollaborativeSettings


def _logits(object_split: tuple[float, float]) -> torch.Tensor:
    """Logits of 4 voxels (background, class 1, class 2): P(object) 0.8 on the first two, 0.2 on the others,
    divided between the two object classes in ``object_split``."""
    p_object = torch.tensor([0.8, 0.8, 0.2, 0.2])
    probabilities = torch.stack([1 - p_object, p_object * object_split[0], p_object * object_split[1]])
    return probabilities.log().reshape(1, 3, 2, 2)


def test_the_object_loss_sees_object_or_not_and_never_which_object_class():
    target = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 2, 2)
    weight = torch.ones(1, 1, 2, 2)
    loss = MaskedObjectDiceCELoss()
    one, other = loss(_logits((0.9, 0.1)), target, weight), loss(_logits((0.1, 0.9)), target, weight)
    assert torch.isclose(one, other, atol=1e-6)  # the split between the object classes costs nothing
    class_two = torch.tensor([2, 2, 0, 0]).reshape(1, 1, 2, 2)
    assert torch.isclose(loss(_logits((0.9, 0.1)), class_two, weight), one, atol=1e-6)
    full = MaskedDiceCELoss()  # ... where the full loss does care
    assert full(_logits((0.1, 0.9)), target, weight) > full(_logits((0.9, 0.1)), target, weight) + 0.5
    wrong = torch.tensor([0, 0, 1, 1]).reshape(1, 1, 2, 2)  # object where P(object) is low costs more
    assert loss(_logits((0.5, 0.5)), wrong, weight) > loss(_logits((0.5, 0.5)), target, weight) + 0.5
    assert loss(_logits((0.5, 0.5)), target, torch.zeros_like(weight)) == 0
    logits = _logits((0.5, 0.5)).requires_grad_()
    loss(logits, target, weight).backward()
    assert logits.grad[0, 0, 1, 0] < 0 < logits.grad[0, 0, 0, 0]  # descent: background logit down at object, up at bg


def test_pseudo_labels_outside_the_ground_truth_become_object_only(sample_case):
    case = annotate_case(sample_case, "central-slice", 0)
    scan = scan_of(case, "zscore")
    carried = np.where(scan.labelled, scan.target, 1).astype(np.uint8)  # a registration that says class 1 everywhere
    registration = Propagated(np.zeros((3,) + scan.image.shape, np.float32), carried)
    base = {"branches": "registration", "registration": "propagate", "propagate_targets": "labels"}

    def kinds(pseudo_classes: str, scans: int, num_classes: int = 3) -> list[np.ndarray]:
        settings = CollaborativeSettings.parse({**base, "pseudo_classes": pseudo_classes})
        volumes, _ = final_targets([scan] * scans, None, [registration] * scans, settings, num_classes)
        return [volume.weight for volume in volumes]

    (weight,) = kinds("ground-truth", 1)
    assert (weight[scan.labelled] == CERTAIN).all() and (weight[~scan.labelled] == OBJECT_ONLY).all()
    assert all((w[~scan.labelled] == OBJECT_ONLY).all() for w in kinds("auto", 2))  # a cohort: the split from GT
    (single,) = kinds("auto", 1)  # one scan (a job): its one painted slice shows the split in one place only
    assert (single == CERTAIN).all() and all((w == CERTAIN).all() for w in kinds("propagated", 2))
    assert all((w == CERTAIN).all() for w in kinds("ground-truth", 2, num_classes=2))  # one object class: as before
    settings = CollaborativeSettings.parse({**base, "pseudo_classes": "ground-truth"})
    (volume,), _ = final_targets([scan], None, [registration], settings, 3)
    np.testing.assert_array_equal(volume.target[scan.labelled], scan.target[scan.labelled])
    assert get_method("collaborative").settings(MethodOptions()).pseudo_classes == "auto"
    assert get_method("collaborative-faithful").settings(MethodOptions()).pseudo_classes == "propagated"
    kind = np.array([CERTAIN, 2.0, CERTAIN, 0.0], np.float32)  # uncertain and left-out voxels keep their kind
    np.testing.assert_array_equal(classes_from_ground_truth(kind, np.array([True, False, False, False])),
                                  [CERTAIN, 2.0, OBJECT_ONLY, 0.0])
    with pytest.raises(SparseSegError, match="pseudo_classes"):
        CollaborativeSettings.parse({"pseudo_classes": "network"})


def test_a_cohort_model_learns_from_object_only_pseudo_labels_and_predicts_both_classes(sample_dataset):
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=30, batch_size=4,
                            extra=dict(registration="demons", demons_iterations=5, branches="registration",
                                       fusion="intersection", final_axes="0", pseudo_classes="ground-truth"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    assert segmenter.training["settings"]["pseudo_classes"] == "ground-truth"
    assert segmenter.training["final"]["final_loss"] > 0
    labels, probabilities = segmenter.predict(cases[0].image)
    assert probabilities.shape[0] == 3 and set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).any()


def test_a_classes_refine_round_keeps_the_object_and_takes_the_networks_classes(sample_case):
    case = annotate_case(sample_case, "central-slice", 0)
    scan = scan_of(case, "zscore")
    previous_target = np.where(scan.labelled, scan.target, 1).astype(np.int16)  # everything object outside the paint
    previous_target[0] = 0  # ... but one background slice
    kind = np.where(scan.labelled, CERTAIN, OBJECT_ONLY).astype(np.float32)
    kind[0] = CERTAIN
    networks = np.full(scan.image.shape, 2, np.uint8)
    networks[:, 0] = 0  # the networks call one row background
    volume = classed_volume(networks, scan, TrainingVolume(scan.image, previous_target, kind))
    free = ~scan.labelled
    classed = free & (previous_target > 0) & (networks > 0)
    assert (volume.target[classed] == 2).all() and (volume.weight[classed] == CERTAIN).all()
    unclassed = free & (previous_target > 0) & (networks == 0)
    assert unclassed.any() and (volume.target[unclassed] == 1).all() and (volume.weight[unclassed] == OBJECT_ONLY).all()
    assert not scan.labelled[0].any() and (volume.target[0] == 0).all()  # background stays background
    np.testing.assert_array_equal(volume.target[scan.labelled], scan.target[scan.labelled])
