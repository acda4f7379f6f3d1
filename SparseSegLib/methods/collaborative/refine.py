"""``refine``: self-training rounds after the final stage.

Each training volume's pseudo-labels come from one propagation of its own labelled slice, so each carries that
volume's own mistakes (a contour that runs on past the object's end, a part the chain lost). The final networks
learn from all volumes at once, so where one volume's labels are odd they predict what the others taught them.
A refine round asks the trained networks for every training volume's labels and trains new networks on those
(noisy-student self-training). ``refine_targets=fused`` keeps the propagation in the loop: the networks' labels
and the registration branch's are fused by the method's ``fusion`` rule (the paper's, with the network in the semi
branch's place). ``refine_targets=classes`` keeps the previous targets' object and background and takes only the
class of each object voxel from the networks (where they call it object): a cohort whose networks learnt the split
between classes from the labelled slices (``pseudo_classes``) then trains on that split everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from ...engine.model import Segmenter
from ...engine.postprocess import object_labels, postprocess_labels
from ...engine.sampling import TrainingVolume
from .branches import Scan, predict_normalised, registration_labels
from .fusion import CERTAIN, OBJECT_ONLY, classes_from_ground_truth, fuse_labels, single_branch_targets
from .propagated import Propagated
from .settings import CollaborativeSettings


def prediction_labels(probabilities: np.ndarray, threshold: float, postprocess: str, objects: int = 1) -> np.ndarray:
    """Labels from the final network(s)' probabilities as the model gives them: the object ``threshold``, then
    ``postprocess`` keeping ``objects`` components (the rules :class:`~SparseSegLib.engine.model.Segmenter` stores
    and applies)."""
    return postprocess_labels(object_labels(probabilities, threshold), probabilities, postprocess, objects)


def network_labels(segmenter: Segmenter, scan: Scan, device: torch.device) -> np.ndarray:
    """The trained final network(s)' labels of one training volume, as its predictions are."""
    return prediction_labels(predict_normalised(segmenter, scan.image, device), segmenter.object_threshold,
                             segmenter.postprocess, segmenter.objects)


def refined_volume(labels: np.ndarray, scan: Scan, registration: Propagated | None,
                   settings: CollaborativeSettings, split_from_labelled: bool = False) -> TrainingVolume:
    """One volume's next training targets from the networks' ``labels`` (labelled slices keep their ground truth)."""
    if settings.refine_targets == "fused" and registration is not None:
        target, kind = fuse_labels(labels, registration_labels(registration, settings), scan.labelled,
                                   scan.ground_truth, settings.fusion)
    else:
        target, kind = single_branch_targets(labels, scan.labelled, scan.ground_truth)
    if split_from_labelled:  # ``pseudo_classes``, as for the final stage
        kind = classes_from_ground_truth(kind, scan.labelled)
    return TrainingVolume(scan.image, target, kind)


def classed_volume(labels: np.ndarray, scan: Scan, previous: TrainingVolume) -> TrainingVolume:
    """``previous``'s targets with each object voxel's class from the networks' ``labels`` (``refine_targets=classes``);
    object voxels the networks call background keep their target as object only; labelled slices stay as they are."""
    target = previous.target.copy()
    kind = (previous.weight if previous.weight is not None else np.full(target.shape, CERTAIN, np.float32)).copy()
    classed = (target > 0) & (labels > 0) & ~scan.labelled
    target[classed] = labels[classed]
    kind[classed & (kind == OBJECT_ONLY)] = CERTAIN
    return TrainingVolume(scan.image, target, kind)


def refined_targets(segmenter: Segmenter, scans: list[Scan], previous: list[TrainingVolume],
                    registration: list[Propagated] | None, settings: CollaborativeSettings,
                    device: torch.device) -> tuple[list[TrainingVolume], dict]:
    """The next round's training volumes for a cohort and how many voxels of the unlabelled slices changed class
    against ``previous`` (the record)."""
    volumes, changed, free = [], 0, 0
    for index, scan in enumerate(scans):
        labels = network_labels(segmenter, scan, device)
        if settings.refine_targets == "classes":
            volume = classed_volume(labels, scan, previous[index])
        else:
            volume = refined_volume(labels, scan, registration[index] if registration else None, settings,
                                    settings.split_from_labelled(len(scans), segmenter.num_classes))
        unlabelled = ~scan.labelled
        changed += int((volume.target[unlabelled] != previous[index].target[unlabelled]).sum())
        free += int(unlabelled.sum())
        volumes.append(volume)
    return volumes, {"changed_voxels": changed, "changed_fraction": round(changed / max(1, free), 5)}


__all__ = ["classed_volume", "network_labels", "prediction_labels", "refined_targets", "refined_volume"]
