"""The rounds of incremental self-labelling over one or many volumes: :class:`SelfLabellingLoop`.

The loop holds the method state (targets and labelled slices per volume, the EMA teacher, the optimiser, the fusion
networks) and runs round after round; what a round does is split by concern into mixins: growing the labels
(:mod:`.labelling`), training (:mod:`.training`) and the fusion passes (:mod:`.fusion`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace

import numpy as np
import torch

from ...case import Case
from ...distributed.collectives import agreed_digest
from ...distributed.context import current, sampler_seed
from ...engine.model import Segmenter
from ...engine.propagation import demons_levels_for
from ...engine.preprocessing import normalize
from ...engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ...errors import SparseSegError
from ..base import MethodOptions, Reporter, RoundResult
from ..common import RoundLoop, network_snapshot
from .fusion import FusionMixin
from .labelling import LabellingMixin
from .schedule import natural_rounds, per_side, slice_weights
from .settings import Settings
from .training import TrainingMixin


class SelfLabellingLoop(LabellingMixin, TrainingMixin, FusionMixin, RoundLoop):
    """The rounds of incremental self-labelling over one or many volumes (see the module doc).

    Round 1 trains on the ground-truth slices; round ``r > 1`` first pseudo-labels the next slices of
    every volume with the current model (the EMA teacher when enabled), then trains. ``targets`` and
    ``labelled`` (per volume: target map; per slice: 0 unlabelled, 1 GT, 2 pseudo) are the method
    state, saved with each round so a job resumes exactly where it stopped.
    """

    def __init__(self, name: str, segmenter: Segmenter, cases: list[Case], options: MethodOptions, reporter: Reporter,
                 settings: Settings, should_stop: Callable[[], bool] | None = None, validation: list[Case] | None = None,
                 stream: bool = True, keep_state: bool = True, total_rounds: int | None = None) -> None:
        super().__init__(name, segmenter, cases, options, reporter, should_stop)
        self.settings = settings
        self.stream = stream
        self.keep_state = keep_state
        self.images = [normalize(case.image, settings.normalization) for case in cases]
        self.targets = [self._target(case) for case in cases]
        self.labelled = [self._gt_slices(target) for target in self.targets]
        self.gt = [labelled == 1 for labelled in self.labelled]
        self.step = [per_side(target.shape[0], settings.k) for target in self.targets]
        self.rng = np.random.default_rng(options.seed + 7)
        self.validation = [(normalize(c.image, settings.normalization), self._target(c)) for c in validation or []]
        self.teacher = copy.deepcopy(segmenter.network) if settings.ema else None
        self.optimizer: torch.optim.Optimizer | None = None
        self.snapshots: list[dict] = []
        self.history: list[dict] = []
        self.proposed_foreground = 0  # foreground voxels among the last round's proposals (0 = collapse)
        self.total = int(total_rounds) if total_rounds else natural_rounds(self.labelled, settings)
        if settings.max_rounds and not total_rounds:
            self.total = min(self.total, int(settings.max_rounds))
        self.members: dict[int, torch.nn.Module] = {}  # networks across axes 1 and 2, trained by the fusion round
        self.slice_fields: dict[tuple[int, int], object] = {}  # continuity: registration of each slice's inner neighbour
        self.demons_levels = [demons_levels_for(case.geometry.spacing_kji) for case in cases]  # coarse to fine if thick
        self.peers: list[SelfLabellingLoop] = []  # co-labelling: the other runs, whose networks label with this one's
        self.leader: SelfLabellingLoop | None = None  # co-labelling: the run that makes this one's pseudo-labels

    def label_together_with(self, followers: list["SelfLabellingLoop"]) -> None:
        """Co-labelling: ``followers`` train on this loop's pseudo-labels, which the average of every run's network makes.

        Independent runs of one chain fail in different places (one leaks past a structure's end, another loses
        it; docs/results/self-labelling.md); averaging them at the end removes a leak but cannot bring back a lost end. Deciding every
        slice with their average keeps one run's early mistake from becoming the chain's.
        """
        for follower in followers:
            follower.targets, follower.labelled, follower.gt = self.targets, self.labelled, self.gt
            follower.leader = self
        self.peers = list(followers)

    # -- targets ----------------------------------------------------------------------------

    def _target(self, case: Case) -> np.ndarray:
        """The case's sparse label (``UNKNOWN`` off the annotation), its classes merged when ``classes`` is merged."""
        target = case.sparse_label(UNKNOWN)
        if self.settings.classes == "merged":
            target = np.where(target > 0, 1, target).astype(np.int16)
        return target

    @staticmethod
    def _gt_slices(target: np.ndarray) -> np.ndarray:
        """Per slice 1 where the target holds any annotated voxel (ground truth), else 0."""
        labelled = (target >= 0).reshape(target.shape[0], -1).any(1).astype(np.int8)
        if not labelled.any():
            raise SparseSegError("a volume has no annotated voxel", "Annotate at least one slice of every volume.")
        return labelled

    def training_volumes(self, index: int, previous: RoundResult | None) -> list[TrainingVolume]:
        """Ground truth + pseudo-labels of every volume, pseudo-labels weighted by distance unless ``uniform``."""
        volumes = []
        for image, target, labelled, gt in zip(self.images, self.targets, self.labelled, self.gt):
            weight = None
            if self.settings.weighting != "uniform":
                per_slice = np.where(gt, 1.0, slice_weights(target.shape[0], gt, self.settings.weighting, self.settings.sigma)).astype(np.float32)
                weight = np.broadcast_to(per_slice[:, None, None], target.shape).copy()
            volumes.append(TrainingVolume(image, target, weight))
        return volumes

    def new_sampler(self, index: int) -> None:
        """The round's sampler over ground truth + pseudo-labels (the labelling network's; the fusion rounds' axis 0)."""
        self.sampler = PatchSampler(self.training_volumes(index, None), 2, self.segmenter.patch_size,
                                    context_slices=self.settings.context, augment=False,
                                    foreground_ratio=self.settings.foreground_ratio,
                                    seed=sampler_seed(self.options.seed * 1000 + index))

    # -- state ----------------------------------------------------------------------------------

    def method_state(self) -> dict:
        """Everything a resumed job needs to go on exactly: targets, labelled slices, teacher, RNG, optimiser, members."""
        return {
            "settings": json.dumps(asdict(self.settings)),
            "targets": [torch.from_numpy(t.copy()) for t in self.targets],
            "labelled": [torch.from_numpy(lab.copy()) for lab in self.labelled],
            "teacher": network_snapshot(self.teacher) if self.teacher is not None else None,
            "rng": json.dumps(self.rng.bit_generator.state),
            "global_step": self.global_step,
            "history": json.dumps(self.history),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
            "members": {str(axis): network_snapshot(net) for axis, net in self.members.items()},
        }

    def load_method_state(self, state: dict) -> None:
        """The inverse of :meth:`method_state`."""
        if not state:
            return
        if len(state["targets"]) != len(self.targets):
            raise SparseSegError("the checkpoint holds a different number of volumes", "Start the job again in a new folder.")
        self.targets = [t.numpy().astype(np.int16).copy() for t in state["targets"]]
        self.labelled = [lab.numpy().astype(np.int8).copy() for lab in state["labelled"]]
        self.overlay_ground_truth()
        if self.teacher is not None and state.get("teacher") is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.global_step = int(state.get("global_step", 0))
        self.history = json.loads(state.get("history", "[]"))
        if state.get("optimizer") is not None:
            self.optimizer = self.new_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
        for axis, weights in (state.get("members") or {}).items():
            self.members[int(axis)] = copy.deepcopy(self.segmenter.network)
            self.members[int(axis)].load_state_dict(weights)

    def overlay_ground_truth(self) -> None:
        """The cases' annotation over the restored targets: a Continue's corrected slices become ground truth.

        Without it a resumed job trained on the checkpoint's pseudo-labels of the slices the user had just
        corrected (hippocampus dev scans: Dice unchanged after two corrections). With the paint the checkpoint
        was written with, this changes nothing (its ground truth is already in the targets)."""
        for target, labelled, case in zip(self.targets, self.labelled, self.cases):
            fresh = self._target(case)
            known = fresh >= 0
            target[known] = fresh[known]
            labelled[self._gt_slices(fresh) == 1] = 1

    def agreed_labels(self) -> str:
        """SHA-256 of the targets and labelled slices, checked equal on every rank (an error if not)."""
        return agreed_digest([*self.targets, *self.labelled], "pseudo-labels")

    def predict(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Labels and probabilities of every case with the final model (the fused one once fusion ran). These are
        the volumes it labels, so the largest-component step keeps the parts holding painted object, as the Start
        default keeps what touches the paint: two painted structures stay two (the largest part when none does)."""
        segmenter = replace(self.segmenter, network=self.final_network(), network_config=self.final_config())
        labels, probabilities = {}, {}
        for case, target, gt in zip(self.cases, self.targets, self.gt):
            probabilities[case.case_id] = segmenter.probabilities(case.image, self.device)
            painted = (target > 0) & gt[:, None, None]
            labels[case.case_id] = segmenter.labels(probabilities[case.case_id], anchor=painted)
        return labels, probabilities

    def round_metrics(self, index: int, labels: dict[str, np.ndarray]) -> dict:
        """How far labelling got: labelled slices, pseudo-labelled and ignored (uncertain) voxels."""
        slices = sum(lab.size for lab in self.labelled)
        pseudo = [t[lab == 2] for t, lab in zip(self.targets, self.labelled)]
        pseudo_voxels = int(sum(np.count_nonzero(p >= 0) for p in pseudo))
        return {"labelled_slices": int(sum(np.count_nonzero(lab) for lab in self.labelled)), "slices": int(slices),
                "labelled_fraction": round(sum(np.count_nonzero(lab) for lab in self.labelled) / slices, 4),
                "pseudo_labelled_voxels": pseudo_voxels,
                "ignored_voxels": int(sum(np.count_nonzero(p < 0) for p in pseudo))}

    # -- the loop -------------------------------------------------------------------------------

    def run(self, state: dict | None = None) -> Iterator[RoundResult]:
        """Rounds after ``state``'s (all without it): expand, train, predict, yield; fusion passes once all is labelled."""
        self.global_step = 0
        done = self.restore(state) if state is not None else 0
        for index in range(done + 1, self.total + 1):
            started = time.perf_counter()
            fusion_index = index - (self.total - self.settings.fusion_passes)
            if self.settings.fuse_axes and fusion_index >= 1 and index > 1 and all(lab.all() for lab in self.labelled):
                # only once every slice holds a label: networks across the other axes need whole targets
                yield self.fusion_round(index, started)
                continue
            added = self.expand() if index > 1 else 0
            self.new_sampler(index)
            stage = f"{self.name} round {index}/{self.total}"
            self.reporter.log(f"{stage}: {self.sampler.labelled_voxels} labelled voxels, {added} new slices pseudo-labelled")
            collapsed = index > 1 and added > 0 and self.proposed_foreground == 0
            after_collapse = bool(self.history) and bool(self.history[-1].get("collapsed_to_background"))
            # refreshed pseudo-labels often recover from one empty round (the next model proposes foreground again)
            if collapsed and (not self.settings.refresh or after_collapse):
                # Every later round would learn "all background" from these and end with an empty result.
                self.reporter.warning(f"{stage}: the network proposed no foreground on any of the {added} new slices, "
                                      "so every pseudo-label is background; the model is probably undertrained",
                                      "Give more iterations (--budget paper or a larger --iterations).")
            summary = self.train_this_round(index, stage)
            self.last_loss = summary["loss"]
            labels, probabilities = self.predict() if self.stream else ({}, {})
            metrics = {**summary, "new_slices": added, "pseudo_foreground_voxels": self.proposed_foreground if index > 1 else None,
                       "collapsed_to_background": collapsed, "seconds": round(time.perf_counter() - started, 3),
                       **self.round_metrics(index, labels)}
            if current() is not None:  # under torchrun: every rank trained on the same pseudo-labels, checked
                metrics["pseudo_labels_sha256"] = self.agreed_labels()
            self.history.append(metrics)
            self.snapshots.append({"round": index, "labelled_fraction": metrics["labelled_fraction"],
                                   "state": network_snapshot(self.final_network()), "config": self.final_config()})
            yield RoundResult(index, self.total, labels, probabilities, metrics=metrics,
                              state=self.state(index) if self.keep_state else None)
