"""How a round grows the labels: the next slices pseudo-labelled, registration continuity, co-labelling.

A mixin of :class:`~.loop.SelfLabellingLoop` (the attributes it reads are set there): this is the half of a round
that happens before training, the part that makes self-labelling what it is.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ...case import Case
from ...distributed.collectives import merge_owned, sum_across
from ...distributed.context import current
from ...engine.model import Segmenter
from ...engine.sampling import UNKNOWN
from ...engine.slice_registration import slice_transform, warp_label
from .pseudo_labels import distance_to, erosion_at, follow_footprint, inner_neighbour, pseudo_labels
from .schedule import next_slices
from .settings import Settings
from .slices import predict_slices


class LabellingMixin:
    """Pseudo-labels the next slices of every volume each round (see :meth:`expand`)."""

    settings: Settings
    segmenter: Segmenter
    cases: list[Case]
    images: list[np.ndarray]
    targets: list[np.ndarray]
    labelled: list[np.ndarray]
    gt: list[np.ndarray]
    step: list[int]
    rng: np.random.Generator
    slice_fields: dict
    demons_levels: list[int]
    proposed_foreground: int

    def labeller(self) -> torch.nn.Module:
        """The network that makes the pseudo-labels: the EMA teacher when enabled, else the trained network."""
        return self.teacher if self.teacher is not None else self.segmenter.network

    def expand(self) -> int:
        """Pseudo-label the next slices of every volume (and, with ``refresh``, re-predict earlier ones).

        With co-labelling peers, their labelling networks' softmax is averaged with this one's; a follower
        does not label (its leader has, for both).
        """
        self.proposed_foreground = 0
        if self.leader is not None:
            return 0
        networks, added = [self.labeller(), *(peer.labeller() for peer in self.peers)], 0
        multiple = self.segmenter.network_config.size_multiple
        context = current()  # under torchrun each rank labels its share of the volumes, then all take every label
        mine = set(context.share(len(self.images))) if context is not None else None
        for v, (image, target, labelled, gt) in enumerate(zip(self.images, self.targets, self.labelled, self.gt)):
            # every rank draws every volume's slices, so the shared random stream stays the same on all of them
            new = next_slices(labelled > 0, self.step[v], self.settings.order, self.rng)
            redo = np.flatnonzero(labelled == 2) if self.settings.refresh else np.array([], int)
            slices = np.union1d(new, redo).astype(int)
            if slices.size == 0:
                continue
            added += int(new.size)
            if mine is not None and v not in mine:
                continue
            probabilities = np.mean([predict_slices(network, image, slices, self.settings.context, multiple)
                                     for network in networks], axis=0)
            # innermost first, so that with continuity each slice sees its inner neighbour's label of this round
            for n in np.argsort(distance_to(gt, slices), kind="stable"):
                s = int(slices[n])
                if gt[s]:
                    continue  # never touch a ground-truth slice
                proposal = pseudo_labels(probabilities[:, n], self.settings.theta, self.settings.threshold,
                                         self.settings.background_theta)
                if self.settings.continuity and (self.settings.continuity_refresh or labelled[s] == 0):
                    footprint = self.neighbour_footprint(v, s)
                    proposal = follow_footprint(proposal, probabilities[:, n], footprint, self.settings.continuity,
                                                self.settings.continuity_seeded)
                self.proposed_foreground += int((proposal > 0).sum())
                free = self.targets[v][s] == UNKNOWN if labelled[s] == 0 else np.ones(target.shape[1:], bool)
                # ground truth voxels of a partly annotated slice are never overwritten either
                free &= ~self._gt_voxels(v, s)
                self.targets[v][s][free] = proposal[free]
                labelled[s] = 2
        if mine is not None:
            self.share_labels(mine)
        for loop in (self, *self.peers):
            loop.segmenter.network.train()
        return added

    def share_labels(self, mine: set[int]) -> None:
        """Under torchrun: every rank takes the targets and labelled slices of the volumes the others labelled (and
        the round's proposed foreground, summed), so all ranks train the next round on the same pseudo-labels.

        The lists are updated in place: co-labelling followers hold the same list objects."""
        owned = {v: (self.targets[v], self.labelled[v]) for v in sorted(mine)}
        for v, (target, labelled) in merge_owned(owned).items():
            self.targets[v], self.labelled[v] = target, labelled
        self.proposed_foreground = int(sum_across(self.proposed_foreground))

    def neighbour_footprint(self, v: int, s: int) -> np.ndarray:
        """The current label of slice ``s``'s inner neighbour, registered onto ``s`` (demons; field cached per slice)."""
        inner = inner_neighbour(self.gt[v], s)
        key = (v, s)
        if key not in self.slice_fields:
            self.slice_fields[key] = slice_transform(self.images[v][s], self.images[v][inner],
                                                     levels=self.demons_levels[v])
        carried = warp_label(self.targets[v][inner], self.slice_fields[key])
        pixels = erosion_at(int(distance_to(self.gt[v], [s])[0]), self.settings.continuity_erode)
        if pixels:
            # a carried label keeps its area slice after slice; shrinking it bounds the over-run past a structure's end
            # to a few slices: only what the network proposes confidently itself (P(fg) >= theta) keeps its size
            inside = ndimage.binary_erosion(carried > 0, iterations=pixels)
            carried = np.where(inside, carried, 0).astype(carried.dtype)
        return carried

    def _gt_voxels(self, v: int, s: int) -> np.ndarray:
        """The annotated voxels of slice ``s`` of volume ``v`` (all of it when the case has no annotated mask)."""
        case = self.cases[v]
        if case.annotated is None:
            return np.ones(case.image.shape[1:], bool)
        return case.annotated[s]
