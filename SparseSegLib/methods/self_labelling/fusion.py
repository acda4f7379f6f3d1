"""The fusion rounds: 2D networks across the two other axes, their softmax averaged, the labels re-labelled.

A mixin of :class:`~.loop.SelfLabellingLoop`, plus :func:`average_runs` (the ensemble of several runs, used by
co-labelling here and by cohort training). Once every slice holds a label, a network across axis 1 or 2 sees each
structure lengthwise and corrects the labelling chain where it ran past a structure's end or lost it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import numpy as np
import torch

from ...distributed.collectives import merge_owned, sum_across
from ...distributed.context import current, sampler_seed
from ...engine.axis_ensemble import AxisEnsemble, to_axis
from ...engine.inference import predict_probabilities
from ...engine.model import Segmenter
from ...engine.networks import NetworkConfig, default_patch_size
from ...engine.sampling import PatchSampler, TrainingVolume
from ..base import RoundResult
from ..common import network_snapshot
from .pseudo_labels import relabel_proposal


def average_runs(segmenters: list[Segmenter]) -> Segmenter:
    """One segmenter averaging the softmax of every network of several independently trained runs.

    Runs started from other seeds make partly independent errors (one loses a thin structure's end that
    another follows), so their mean is steadier than any one; each run's networks keep their own axes.
    """
    members, axes = [], []
    for segmenter in segmenters:
        network = segmenter.network
        if isinstance(network, AxisEnsemble):
            members += list(network.members)
            axes += list(network.axes)
        else:
            members.append(network)
            axes += list(segmenter.network_config.axes)
    config = replace(segmenters[0].network_config, axes=tuple(axes))
    return replace(segmenters[0], network=AxisEnsemble(members, config.axes), network_config=config)


class FusionMixin:
    """The fusion passes and the final model they make (see :meth:`fuse`)."""

    members: dict[int, torch.nn.Module]
    peers: list
    leader: object

    def final_network(self) -> torch.nn.Module:
        """The labelling network, or once the fusion round ran, the ensemble of it and the other axes' networks."""
        if not self.members:
            return self.labeller()
        return AxisEnsemble([self.labeller(), *(self.members[a] for a in sorted(self.members))], self.final_config().axes)

    def final_config(self) -> NetworkConfig:
        """The config of :meth:`final_network`: the labelling network's, with the axes of every fused network."""
        return replace(self.segmenter.network_config, axes=(0, *sorted(self.members)))

    def fuse(self, index: int, stage: str, teacher: tuple[torch.nn.Module, NetworkConfig] | None = None) -> dict:
        """The fusion round: a 2D network across each other axis, trained on the ground truth + pseudo-labels.

        Every slice is labelled by now, so a network across axis 1 or 2 sees each structure lengthwise, with
        full in-plane targets (uncertain voxels stay out of the loss); the final model averages all three.
        """
        summaries = {}
        if self.members:  # a later pass: the fused model re-labels, then every network is fine-tuned on its labels
            if self.peers and teacher is None:
                teacher = self.co_teacher()
            if self.leader is None:
                changed = self.relabel_with_fused_model(*(teacher or ()))
                whose = "the runs' averaged model" if teacher else "the fused model"
                self.reporter.log(f"{stage}: {whose} re-labelled the pseudo-labels ({changed} voxels changed)")
            self.new_sampler(index)
            summaries[0] = self.train_this_round(index, f"{stage} (axis 0)")
        reference = self._validate(self.labeller()) if self.validation else 0.0
        for axis in (1, 2):
            volumes = [TrainingVolume(to_axis(v.image, axis), to_axis(v.target, axis),
                                      None if v.weight is None else to_axis(v.weight, axis))
                       for v in self.training_volumes(index, None)]
            largest = tuple(int(n) for n in np.max([v.image.shape for v in volumes], axis=0))
            patch = default_patch_size(largest, self.segmenter.network_config)
            sampler = PatchSampler(volumes, 2, patch, context_slices=self.settings.context, augment=False,
                                   foreground_ratio=self.settings.foreground_ratio,
                                   seed=sampler_seed(self.options.seed * 1000 + index * 10 + axis))
            # start from the labelling network: a fresh one on these imbalanced targets often stayed at "all background"
            # (validation Dice 0.001-0.007 for one of the two axes in two of three hippocampus runs); a later pass
            # goes on from the member of the pass before
            network = self.members[axis] if axis in self.members else copy.deepcopy(self.labeller())
            summaries[axis] = self.train_this_round(index, f"{stage} (axis {axis})", network=network, sampler=sampler, axis=axis)
            if self.validation and summaries[axis]["best"] < 0.5 * reference:
                # averaging in a network that missed the structure would erase the others' foreground
                self.reporter.warning(f"{stage}: the network across axis {axis} validated at {summaries[axis]['best']:.3f} "
                                      f"against {reference:.3f} for the labelling network; it is left out of the fusion",
                                      "Give the fusion networks more epochs (fusion_epochs) or more iterations.")
                self.members.pop(axis, None)
                continue
            self.members[axis] = network
        return {"epochs": sum(s["epochs"] for s in summaries.values()),
                "iterations": sum(s["iterations"] for s in summaries.values()),
                "loss": float(np.mean([s["loss"] for s in summaries.values()])),
                "monitor": summaries[1]["monitor"], "best": {str(a): s["best"] for a, s in summaries.items()},
                "augmented": False, "fused_axes": [0, *sorted(self.members)], "labeller_validation": round(reference, 4)}

    def co_teacher(self) -> tuple[torch.nn.Module, NetworkConfig]:
        """Co-labelling: every run's fused model averaged (network, config), to re-label the shared pseudo-labels."""
        average = average_runs([replace(loop.segmenter, network=loop.final_network(), network_config=loop.final_config())
                                for loop in (self, *self.peers)])
        return average.network, average.network_config

    def relabel_with_fused_model(self, network: torch.nn.Module | None = None, config: NetworkConfig | None = None) -> int:
        """Replace every pseudo-label with the fused model's (or the given ``network``'s; same threshold reading);
        ground truth stays.

        Networks across the other axes see each structure lengthwise and correct the labelling chain where it
        ran past a structure's end or lost it (docs/results/self-labelling.md); their average is a better teacher than the chain.
        """
        if network is None:
            network, config = self.final_network(), self.final_config()
        changed = 0
        context = current()  # under torchrun each rank re-labels its share of the volumes, then all take every label
        mine = set(context.share(len(self.images))) if context is not None else None
        for v, (image, target, labelled) in enumerate(zip(self.images, self.targets, self.labelled)):
            if mine is not None and v not in mine:
                continue
            probabilities = predict_probabilities(network, image, config, self.segmenter.patch_size, self.device)
            proposal = relabel_proposal(probabilities, self.settings)
            for s in np.flatnonzero(labelled == 2):
                free = ~self._gt_voxels(v, s)
                changed += int(np.count_nonzero(target[s][free] != proposal[s][free]))
                target[s][free] = proposal[s][free]
        if mine is not None:
            for v, target in merge_owned({v: self.targets[v] for v in sorted(mine)}).items():
                self.targets[v] = target
            changed = int(sum_across(changed))
        return changed

    def fusion_round(self, index: int, started: float, teacher: tuple[torch.nn.Module, NetworkConfig] | None = None) -> RoundResult:
        """One fusion pass; ``teacher`` (network, config) re-labels instead of this run's own fused model (an ensemble pass)."""
        stage = f"{self.name} round {index}/{self.total}"
        self.reporter.log(f"{stage}: fusing the three axes (2D networks across axes 1 and 2 on the labels so far)")
        summary = self.fuse(index, stage, teacher)
        self.last_loss = summary["loss"]
        labels, probabilities = self.predict() if self.stream else ({}, {})
        metrics = {**summary, "new_slices": 0, "pseudo_foreground_voxels": None, "collapsed_to_background": False,
                   "seconds": round(time.perf_counter() - started, 3), **self.round_metrics(index, labels)}
        if current() is not None:  # under torchrun: the re-labelled pseudo-labels are the same on every rank, checked
            metrics["pseudo_labels_sha256"] = self.agreed_labels()
        self.history.append(metrics)
        self.snapshots.append({"round": index, "labelled_fraction": metrics["labelled_fraction"],
                               "state": network_snapshot(self.final_network()), "config": self.final_config()})
        return RoundResult(index, self.total, labels, probabilities, metrics=metrics,
                           state=self.state(index) if self.keep_state else None)
