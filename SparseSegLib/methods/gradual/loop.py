"""The Gradual Learning round loop: round ``r`` trains on GT + pseudo-labels of the regions grown ``r - 1`` times."""

from __future__ import annotations

import numpy as np
import torch

from ...engine.inference import predict_probabilities
from ...engine.networks import build_network
from ...engine.preprocessing import normalize
from ...engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ...engine.trainer import seed_everything
from ...errors import SparseSegError
from ..base import RoundResult
from ..common import RoundLoop, across_axis
from .pseudo_labels import pseudo_label_target
from .regions import RegionPatchSampler, auto_step, grow_box, grow_mask, region_boxes
from .settings import parse_settings
from .slice_axis import moved_box, moved_volume, painted_axis


class GradualLoop(RoundLoop):
    """:class:`RoundLoop` whose round ``r`` trains on GT + pseudo-labels of the regions grown ``r - 1`` times.

    Everything (regions, targets, probabilities) lives on the cases' own grid; a 2D network runs across the
    painted axis ``slice_axis`` and only its training sampler sees the volumes with that axis first.
    """

    def __init__(self, name, segmenter, cases, options, reporter, should_stop=None) -> None:
        super().__init__(name, segmenter, cases, options, reporter, should_stop)
        self.settings = parse_settings(options)
        for case in cases:
            if case.annotated is None or case.label is None:
                raise SparseSegError(f"{case.case_id}: gradual learning needs a sparse annotation",
                                     "Give an annotation (slices or boxes) for every case.")
            if not case.annotated.any():
                raise SparseSegError(f"{case.case_id}: empty annotation", "Annotate at least one slice or box.")
        #: The array axis the annotation was painted along (0 for boxes): the slice form grows and trains across it.
        self.slice_axis = painted_axis(cases)
        self.segmenter = across_axis(segmenter, self.slice_axis, cases, options)
        #: The axis the training sampler's volumes are moved to the front for (2D networks only).
        self.network_axis = self.slice_axis if self.segmenter.network_config.dims == 2 else 0
        self.axes = (0, 1, 2) if self.settings.grow_axes == "all" else (self.slice_axis,)
        self.images = [normalize(case.image, self.segmenter.normalization) for case in cases]
        self.ground_truth = [case.sparse_label(UNKNOWN) for case in cases]
        self.initial_boxes = [region_boxes(case.annotated) for case in cases]
        if self.settings.step == "auto":
            self.step = auto_step([case.annotated for case in cases], self.axes, int(options.rounds))
        else:
            self.step = int(self.settings.step)
        #: Current training targets per case (GT + pseudo-labels, UNKNOWN elsewhere) and the growth they reach.
        self.targets: list[np.ndarray] = [gt.copy() for gt in self.ground_truth]
        self.growth = 0
        self.covered_at: int | None = None
        self.pseudo_stats: dict = {}
        across = f" across array axis {self.network_axis}" if self.segmenter.network_config.dims == 2 else ""
        reporter.log(f"{name}: {self.segmenter.network_config.dims}D network{across}, growing along axes {self.axes}, "
                     f"step {self.step} voxel(s) per round ({'auto' if self.settings.step == 'auto' else 'given'}), "
                     f"options {self.settings.to_dict()}, {sum(len(b) for b in self.initial_boxes)} annotated region(s)")

    # -- regions --------------------------------------------------------------------------------

    def labelled_mask(self, index: int, growth: int) -> np.ndarray:
        return grow_mask(self.cases[index].annotated, growth, self.axes)

    def grown_boxes(self, index: int, growth: int) -> list[tuple]:
        shape = self.cases[index].image.shape
        return [grow_box(box, growth, shape, self.axes) for box in self.initial_boxes[index]]

    def region_probabilities(self, index: int, growth: int) -> np.ndarray:
        """Softmax of the current network over the grown boxes (mean where they overlap); zeros elsewhere."""
        config = self.segmenter.network_config
        shape = self.cases[index].image.shape
        total = np.zeros((self.segmenter.num_classes,) + shape, np.float32)
        count = np.zeros(shape, np.float32)
        for low, high in self.grown_boxes(index, growth):
            window = tuple(slice(lo, hi) for lo, hi in zip(low, high))
            crop = self.images[index][window]
            total[(slice(None),) + window] += predict_probabilities(self.segmenter.network, crop, config,
                                                                     self.segmenter.patch_size, self.device)
            count[window] += 1.0
        self.segmenter.network.cpu()
        return total / np.maximum(count, 1.0)[None]

    # -- plug-in points -------------------------------------------------------------------------

    def training_volumes(self, index: int, previous: RoundResult | None) -> list[TrainingVolume] | None:
        if index > 1:
            growth = self.step * (index - 1)
            self.pseudo_stats = {}
            for case_index, case in enumerate(self.cases):
                self.targets[case_index] = self.pseudo_label(case_index, growth, previous)
            self.growth = growth
            if self.settings.restart:
                seed_everything(self.options.seed + index)
                fresh = build_network(self.segmenter.network_config, self.segmenter.num_classes)
                self.segmenter.network.load_state_dict(fresh.state_dict())
        return self.current_volumes()

    def pseudo_label(self, case_index: int, growth: int, previous: RoundResult | None) -> np.ndarray:
        """The case's target for a round whose regions are grown by ``growth`` (see :mod:`.pseudo_labels`)."""
        case = self.cases[case_index]
        grown = self.labelled_mask(case_index, growth)
        if self.settings.relabel == "freeze":
            base = self.targets[case_index]
            to_predict = grown & (base < 0)
        else:
            base = self.ground_truth[case_index]
            to_predict = grown & ~case.annotated
        if self.settings.predict == "volume" and previous is not None and case.case_id in previous.probabilities:
            probabilities = previous.probabilities[case.case_id]
        elif self.settings.predict == "volume":
            _, probabilities = self.segmenter.predict(case.image, self.device)
        else:
            probabilities = self.region_probabilities(case_index, growth)
        target, stats = pseudo_label_target(probabilities, base, self.ground_truth[case_index], case.annotated,
                                            to_predict, self.settings.confidence, self.settings.anchor)
        self.pseudo_stats[case.case_id] = stats
        return target

    def current_volumes(self) -> list[TrainingVolume]:
        return [TrainingVolume(image, target) for image, target in zip(self.images, self.targets)]

    def resume_volumes(self) -> list[TrainingVolume]:
        return self.current_volumes()

    def new_sampler(self, volumes: list[TrainingVolume], index: int) -> PatchSampler:
        """A sampler over ``volumes`` moved so that the 2D network's slice axis comes first."""
        axis = self.network_axis
        volumes = [moved_volume(volume, axis) for volume in volumes]
        if self.settings.crops == "labelled":
            return super().new_sampler(volumes, index)
        network_config = self.segmenter.network_config
        seed = self.options.seed if index <= 1 else self.options.seed * 1000 + index
        regions = [[moved_box(box, axis) for box in self.grown_boxes(i, self.growth)] for i in range(len(self.cases))]
        return RegionPatchSampler(volumes, network_config.dims, self.segmenter.patch_size, regions,
                                  context_slices=network_config.context_slices, augment=self.options.augment, seed=seed)

    def method_state(self) -> dict:
        return {"growth": self.growth, "step": self.step, "covered_at": self.covered_at,
                "targets": [torch.from_numpy(target.astype(np.int8)) for target in self.targets]}

    def load_method_state(self, state: dict) -> None:
        if not state:
            return
        self.growth = int(state["growth"])
        self.step = int(state["step"])
        self.covered_at = state.get("covered_at")
        targets = state.get("targets") or []
        if len(targets) != len(self.cases):
            raise SparseSegError("the checkpoint holds pseudo-labels for other cases", "Start the job again in a new folder.")
        self.targets = [np.asarray(t.numpy() if hasattr(t, "numpy") else t, dtype=np.int16) for t in targets]

    def round_metrics(self, index: int, labels: dict[str, np.ndarray]) -> dict:
        labelled = [int(np.count_nonzero(t >= 0)) for t in self.targets]
        total = [int(t.size) for t in self.targets]
        covered = all(bool(self.labelled_mask(i, self.growth).all()) for i in range(len(self.cases)))
        if covered and self.covered_at is None:
            self.covered_at = index
        return {
            "gl_repetition": index - 1,
            "growth_voxels": self.growth,
            "step": self.step,
            "slice_axis": self.slice_axis,
            "labelled_fraction": round(float(sum(labelled) / sum(total)), 6),
            "ground_truth_voxels": int(sum(int(c.annotated.sum()) for c in self.cases)),
            "pseudo_labelled_voxels": int(sum(s["pseudo_labelled"] for s in self.pseudo_stats.values())),
            "unconfident_voxels": int(sum(s["unconfident"] for s in self.pseudo_stats.values())),
            "unanchored_voxels": int(sum(s["unanchored"] for s in self.pseudo_stats.values())),
            "covered": covered,
            "gradual": {**self.settings.to_dict(), "step": self.step},
        }
