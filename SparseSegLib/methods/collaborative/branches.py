"""The two pseudo-label branches and the final stage, on a list of volumes whose labelled slices run along axis 0.

Shared by the cohort path (``sparseseg train/bench``: every training volume, one model) and the single-scan worker
job (one volume, streamed rounds), so both run the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...case import Case, Geometry
from ...engine.intensity_gate import IntensityEvidence
from ...engine.model import Segmenter
from ...engine.postprocess import object_labels
from ...engine.propagation import PropagationSettings, demons_levels_for, open_end_reach, propagate_slices
from ...engine.registration_network import NetworkSliceRegistration, registration_device, train_registration
from ...engine.sampling import UNKNOWN, TrainingVolume
from ...errors import SparseSegError
from ..base import MethodOptions, Reporter
from .fusion import classes_from_ground_truth, fuse_labels, fusion_counts, single_branch_targets
from .propagated import Propagated
from .settings import CollaborativeSettings
from .training import train_final, train_semi


@dataclass
class Scan:
    """One volume as the branches see it: normalised image, sparse target (``UNKNOWN`` where not labelled), the
    whole labelled slices along axis 0 and the slice spacing (for the optional open-end fade)."""

    case_id: str
    image: np.ndarray
    target: np.ndarray
    painted: list[int]
    spacing_kji: tuple[float, float, float]

    @property
    def labelled(self) -> np.ndarray:
        return self.target >= 0

    @property
    def ground_truth(self) -> np.ndarray:
        return np.where(self.labelled, self.target, 0).astype(np.int16)

    def training_volume(self) -> TrainingVolume:
        return TrainingVolume(self.image, self.target)

    def as_case(self, num_classes: int) -> Case:
        """A case holding only what a branch may see: the image and the labelled voxels (nothing else of the label),
        for the single-scan default (``registration=propagate``)."""
        geometry = Geometry(size=tuple(int(n) for n in self.image.shape[::-1]),
                            spacing=tuple(float(s) for s in self.spacing_kji[::-1]))
        names = {index: f"class {index}" for index in range(1, num_classes)}
        return Case(self.case_id, self.image, geometry, self.ground_truth, self.labelled, names)


def whole_slices(labelled: np.ndarray) -> list[int]:
    """Slices along axis 0 that are labelled in full (a painted / central slice), the chain's starting points."""
    return [int(s) for s in np.flatnonzero(labelled.all(axis=(1, 2)))]


def scan_of(case: Case, normalization: str) -> Scan:
    from ...engine.preprocessing import normalize

    target = case.sparse_label(UNKNOWN)
    return Scan(case.case_id, normalize(case.image, normalization), target, whole_slices(target >= 0),
                case.geometry.spacing_kji)


def registration_branch(scans: list[Scan], num_classes: int, settings: CollaborativeSettings, device: torch.device,
                        seed: int, reporter: Reporter, stage: str,
                        should_stop: Callable[[], bool] | None = None) -> tuple[list[Propagated], dict]:
    """Class probabilities ``(C, k, j, i)`` per scan, its labelled slices carried outwards slice by slice, and the
    branch's own labels where it has them (``propagate`` with ``propagate_targets=labels``; else None).

    ``network``: one registration network trained on neighbouring-slice pairs of all ``scans`` (no labels), its
    fields chained by :func:`~SparseSegLib.engine.propagation.propagate_slices`; ``demons``: the same chaining
    with SimpleITK demons fields, no training; ``propagate``: the single-scan default on each scan (:mod:`.propagated`).
    """
    missing = [scan.case_id for scan in scans if not scan.painted]
    if missing:
        raise SparseSegError(f"{len(missing)} volume(s) have no whole labelled slice to propagate from (e.g. {missing[0]})",
                             "Label whole slices (e.g. --annotation central-slice), use --option branches=semi, or "
                             "train a method that learns from boxes (--method gradual or sparse-only).")
    record: dict = {"registration": settings.registration}
    if settings.registration == "propagate":
        from .propagated import PropagationCache, propagate_cases, propagation_workers

        cache = PropagationCache(settings.propagate_cache) if settings.propagate_cache else None
        results, counts = propagate_cases([scan.as_case(num_classes) for scan in scans], settings.propagate_extra(), seed, device.type,
                                          propagation_workers(settings.propagate_workers, device.type), reporter, stage,
                                          should_stop, cache)
        if settings.propagate_targets == "argmax":
            results = [Propagated(result.probabilities, None) for result in results]
        return results, {**record, **counts}
    network = None
    if settings.registration == "network":
        config = settings.registration_config()
        if registration_device(device) != device:
            reporter.log(f"{stage}: the registration network runs on the CPU (Apple MPS lacks its border padding)")
        reporter.log(f"{stage}: registration network {list(config.channels)} on neighbouring-slice pairs of "
                     f"{len(scans)} volume(s), {config.iterations} iterations, batch {config.batch_size}")
        network, losses = train_registration([scan.image for scan in scans], config, device, seed,
                                             lambda s, t, loss, sps: reporter.progress(stage, s, t, loss, sps), should_stop)
        record.update(iterations=config.iterations, final_loss=float(np.mean(losses[-25:])),
                      first_loss=float(np.mean(losses[:10])))
    results = []
    for scan in scans:
        registration = NetworkSliceRegistration(network, scan.image, device) if network is not None else None
        reach = None
        if settings.open_end > 0:
            reach = lambda start, scan=scan: open_end_reach(scan.ground_truth[start], scan.spacing_kji, settings.open_end)  # noqa: E731
        evidence = IntensityEvidence.from_paint(scan.image, scan.ground_truth, scan.labelled) \
            if settings.intensity == "chain" else None
        probabilities = propagate_slices(scan.image, scan.ground_truth, scan.painted, num_classes,
                                         PropagationSettings(settings.demons_iterations, settings.demons_smoothing,
                                                             levels=demons_levels_for(scan.spacing_kji)),
                                         should_stop=should_stop, registration=registration, open_end_reach=reach,
                                         workers=torch.get_num_threads(),
                                         refine=None if evidence is None else evidence.trim)
        results.append(Propagated(probabilities if evidence is None else evidence.update(probabilities), None))
    return results, record


def semi_branch(segmenter: Segmenter, scans: list[Scan], settings: CollaborativeSettings, options: MethodOptions,
                device: torch.device, reporter: Reporter, stage: str,
                should_stop: Callable[[], bool] | None = None) -> tuple[list[np.ndarray], dict]:
    """Train ``segmenter`` as the semi-supervised branch; returns its class probabilities per scan and a record."""
    reporter.log(f"{stage}: semi-supervised branch, {settings.semi_epochs} epochs of {settings.epoch_iterations} steps, "
                 f"pseudo-labels from epoch {settings.k1}, alpha up to {settings.alpha_f} at epoch {settings.k2}")
    record = train_semi(segmenter, [scan.training_volume() for scan in scans], settings, options, reporter, device,
                        stage, should_stop)
    return [predict_normalised(segmenter, scan.image, device) for scan in scans], record


def predict_normalised(segmenter: Segmenter, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Class probabilities of an already normalised image (the segmenter's normalisation is not applied again)."""
    from ...engine.inference import predict_probabilities

    return predict_probabilities(segmenter.network, image, segmenter.network_config, segmenter.patch_size, device)


def registration_labels(result: Propagated, settings: CollaborativeSettings) -> np.ndarray:
    """What the registration branch says per voxel: its own labels where it has them, else its most likely class
    (object only above ``object_threshold``, the single-scan default's rule)."""
    return result.labels if result.labels is not None else object_labels(result.probabilities, settings.object_threshold)


def final_targets(scans: list[Scan], semi: list[np.ndarray] | None, registration: list[Propagated] | None,
                  settings: CollaborativeSettings, num_classes: int) -> tuple[list[TrainingVolume], dict]:
    """The final network's training volumes (target + kind per voxel) from the branches that ran, and counts
    (``num_classes``, background included, and the number of scans decide ``pseudo_classes``)."""
    split_from_labelled = settings.split_from_labelled(len(scans), num_classes)
    volumes, counts = [], {"certain_object": 0, "uncertain": 0, "left_out": 0}
    for index, scan in enumerate(scans):
        semi_labels = semi[index].argmax(0) if semi is not None else None
        carried = registration_labels(registration[index], settings) if registration is not None else None
        if semi_labels is not None and carried is not None:
            target, kind = fuse_labels(semi_labels, carried, scan.labelled, scan.ground_truth, settings.fusion)
            for key, value in fusion_counts(semi_labels, carried, scan.labelled).items():
                counts[key] += value
        else:
            target, kind = single_branch_targets(semi_labels if semi_labels is not None else carried,
                                                 scan.labelled, scan.ground_truth)
        if split_from_labelled:
            kind = classes_from_ground_truth(kind, scan.labelled)
        if settings.confidence > 0 and registration is not None:
            unsure = (registration[index].probabilities.max(0) < settings.confidence) & ~scan.labelled
            target[unsure] = UNKNOWN  # in no loss: the final network fills the band from what it learnt elsewhere
            counts["left_out"] += int(unsure.sum())
        volumes.append(TrainingVolume(scan.image, target, kind))
    return volumes, counts


def final_network(segmenter: Segmenter, volumes: list[TrainingVolume], settings: CollaborativeSettings,
                  options: MethodOptions, device: torch.device, reporter: Reporter, stage: str,
                  should_stop: Callable[[], bool] | None = None) -> dict:
    reporter.log(f"{stage}: final network on ground truth + {settings.fusion} fused pseudo-labels (beta {settings.beta})")
    return train_final(segmenter, volumes, settings, options, reporter, device, stage, should_stop)
