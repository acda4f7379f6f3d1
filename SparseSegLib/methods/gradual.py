"""Gradual Learning: grow the labelled regions round by round with the network's own pseudo-labels.

3D Gradual Learning (Engster et al., MIDL 2025 short paper; ../shared/docs/methods.md section 1) and
its 2D slice-stack form (Engster et al., MIDL 2024), as one :class:`~SparseSegLib.methods.common.RoundLoop`.

Round 1 is the paper's "GL repetition 0": the network trains on the ground truth of the annotated
regions only (n non-overlapping boxes, or the slices / boxes a user painted). Every later round ``r``:

1. every annotated region is grown by ``step`` voxels in every direction (3D form; the 2D form grows
   along the slice axis 0 only), clipped at the volume border; after ``r - 1`` growths a region is the
   Chebyshev dilation of the annotated mask by ``(r - 1) * step`` voxels;
2. the current network predicts the grown regions with sliding-window inference (default: each grown
   region's bounding box on its own, softmax averaged where grown boxes overlap, as the paper applies
   the model "on the expanded subvolume"; option ``predict="volume"`` uses the whole-volume prediction);
3. the predicted voxels of the grown regions become pseudo-labels; ground-truth voxels are never
   overwritten;
4. the network trains on ground truth + pseudo-labels with random crops inside the grown regions;
5. the whole volume is predicted and streamed as the round's result.

The run ends after ``options.rounds`` rounds (the paper's R = 10 repetitions is ``rounds = 11``) or,
with ``stop_when_covered`` (default), after the first round that trained on the whole volume.

Network: ``options.network`` picks the form. ``3d``: MONAI 3D U-Net on random crops (``patch_size``;
the paper's 64^3 inside 80^3 boxes) taken inside the grown regions. ``2d``: the original slice-stack
Gradual Learning, a 2D U-Net on slices along axis 0, regions grown slice by slice along axis 0.

Method options (``options.extra``; job.json ``parameters.method_options``; ``--method-option KEY=VALUE``):

``step``           voxels grown per round (int) or ``"auto"`` (default): for box regions 1/10 of the mean
                   box edge (the paper's s = 8 for 80^3 boxes); for thin regions (slices) the growth that
                   covers the volume in the planned rounds, ``ceil(max distance / (rounds - 1))``.
``grow_axes``      ``"all"`` (3D default) or ``"slice"`` (grow along axis 0 only; 2D default).
``relabel``        ``"repredict"`` (default, recommended by methods.md: every non-GT voxel of the grown
                   region is predicted afresh each round) or ``"freeze"`` (earlier pseudo-labels are kept;
                   only newly reached voxels are predicted).
``confidence``     None (default: hard argmax pseudo-labels, the paper's reading) or a threshold in (0, 1):
                   voxels whose top softmax probability is below it stay unknown for that round.
``restart``        False (default: fine-tune the same network every round, cheaper) or True (a freshly
                   initialised network each round, seeded).
``predict``        ``"regions"`` (default) or ``"volume"`` (see step 2).
``crops``          ``"regions"`` (default: uniformly random crops inside a grown region, as the paper) or
                   ``"labelled"`` (the project's foreground-balanced sampler centred on labelled voxels).
``stop_when_covered``  True (default) or False.
``rounds``         rounds for ``sparseseg train/bench`` when ``options.rounds`` is 1 (default 11 = paper).

Every option that ran is logged at the start and stored in each round's metrics (``gradual``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import ndimage

from ..case import Case
from ..engine.inference import predict_probabilities
from ..engine.networks import build_network
from ..engine.preprocessing import normalize
from ..engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ..engine.trainer import seed_everything
from ..errors import SparseSegError
from .base import MethodOptions, Reporter, RoundResult, register
from .common import RoundLoop, new_segmenter

#: The paper's 10 GL repetitions after the initial training on ground truth.
PAPER_ROUNDS = 11

DEFAULTS = {
    "step": "auto",
    "grow_axes": None,  # by network: "all" for 3D, "slice" for 2D
    "relabel": "repredict",
    "confidence": None,
    "restart": False,
    "predict": "regions",
    "crops": "regions",
    "stop_when_covered": True,
    "rounds": PAPER_ROUNDS,
}
CHOICES = {
    "grow_axes": ("all", "slice"),
    "relabel": ("repredict", "freeze"),
    "predict": ("regions", "volume"),
    "crops": ("regions", "labelled"),
}


@dataclass(frozen=True)
class GradualSettings:
    """The method options after validation (see the module doc)."""

    step: int | str
    grow_axes: str
    relabel: str
    confidence: float | None
    restart: bool
    predict: str
    crops: str
    stop_when_covered: bool

    def to_dict(self) -> dict:
        return {"step": self.step, "grow_axes": self.grow_axes, "relabel": self.relabel, "confidence": self.confidence,
                "restart": self.restart, "predict": self.predict, "crops": self.crops,
                "stop_when_covered": self.stop_when_covered}


def _as_bool(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise SparseSegError(f"gradual option {key}={value!r} is not true or false", f"Use {key}=true or {key}=false.")


def parse_settings(options: MethodOptions) -> GradualSettings:
    """Validate ``options.extra`` against :data:`DEFAULTS`; unknown keys and bad values are one-line errors."""
    extra = dict(options.extra or {})
    unknown = sorted(set(extra) - set(DEFAULTS))
    if unknown:
        raise SparseSegError(f"unknown gradual option(s): {', '.join(unknown)}", f"Known options: {', '.join(DEFAULTS)}.")
    values = {**DEFAULTS, **{k: v for k, v in extra.items() if v is not None or k == "confidence"}}
    dims = 2 if options.network.lower() == "2d" else 3
    if values["grow_axes"] is None:
        values["grow_axes"] = "slice" if dims == 2 else "all"
    for key, allowed in CHOICES.items():
        if values[key] not in allowed:
            raise SparseSegError(f"gradual option {key}={values[key]!r} is not one of {', '.join(allowed)}",
                                 f"Use {key}={allowed[0]} (default) or another of: {', '.join(allowed)}.")
    step = values["step"]
    if step != "auto":
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise SparseSegError(f"gradual option step={step!r} is not a whole number", "Use step=auto or e.g. step=8.") from None
        if step < 1:
            raise SparseSegError(f"gradual option step={step} must be at least 1", "Use step=auto or e.g. step=8.")
    confidence = values["confidence"]
    if confidence is not None:
        try:
            confidence = float(confidence)
        except (TypeError, ValueError):
            raise SparseSegError(f"gradual option confidence={confidence!r} is not a number", "E.g. confidence=0.8.") from None
        if not 0.0 < confidence < 1.0:
            raise SparseSegError(f"gradual option confidence={confidence} is outside (0, 1)", "E.g. confidence=0.8.")
    return GradualSettings(step=step, grow_axes=values["grow_axes"], relabel=values["relabel"], confidence=confidence,
                           restart=_as_bool("restart", values["restart"]), predict=values["predict"], crops=values["crops"],
                           stop_when_covered=_as_bool("stop_when_covered", values["stop_when_covered"]))


# --------------------------------------------------------------------------------------------------
# Regions


def region_boxes(annotated: np.ndarray) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """``(low, high)`` bounding boxes (high exclusive) of the connected parts of an annotated mask."""
    components, count = ndimage.label(np.asarray(annotated, bool), structure=np.ones((3, 3, 3), bool))
    boxes = []
    for found in ndimage.find_objects(components)[:count]:
        if found is not None:
            boxes.append((tuple(s.start for s in found), tuple(s.stop for s in found)))
    return boxes


def grow_box(box, amount: int, shape: tuple[int, ...], axes: tuple[int, ...]):
    """A box grown by ``amount`` voxels on both sides along ``axes``, clipped at the volume border."""
    low, high = list(box[0]), list(box[1])
    for axis in axes:
        low[axis] = max(0, low[axis] - amount)
        high[axis] = min(shape[axis], high[axis] + amount)
    return tuple(low), tuple(high)


def grow_mask(mask: np.ndarray, amount: int, axes: tuple[int, ...]) -> np.ndarray:
    """Chebyshev dilation of ``mask`` by ``amount`` voxels along ``axes`` (clipped at the border).

    For a box this is exactly the box grown by ``amount`` in each direction of ``axes``.
    """
    mask = np.asarray(mask, bool)
    if amount <= 0:
        return mask.copy()
    size = [1, 1, 1]
    for axis in axes:
        size[axis] = 2 * amount + 1
    return ndimage.maximum_filter(mask.astype(np.uint8), size=tuple(size), mode="constant", cval=0).astype(bool)


def cover_distance(mask: np.ndarray, axes: tuple[int, ...]) -> int:
    """How far (Chebyshev, along ``axes``) the farthest voxel lies from ``mask``: growths to cover the volume."""
    mask = np.asarray(mask, bool)
    if mask.all():
        return 0
    if not mask.any():
        raise SparseSegError("no annotated voxel to grow from", "Annotate at least one slice or box.")
    if tuple(axes) == (0,):
        occupied = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(1))
        positions = np.arange(mask.shape[0])
        return int(np.max(np.min(np.abs(positions[:, None] - occupied[None]), axis=1)))
    return int(ndimage.distance_transform_cdt(~mask, metric="chessboard").max())


def auto_step(annotated_masks: list[np.ndarray], axes: tuple[int, ...], rounds: int) -> int:
    """The default growth per round (see the module doc)."""
    edges, thin = [], False
    for mask in annotated_masks:
        for low, high in region_boxes(mask):
            extents = [high[a] - low[a] for a in axes]
            if min(extents) <= 1:
                thin = True
            edges.append(float(np.mean(extents)))
    if not thin and edges:
        return max(1, int(round(np.mean(edges) / 10.0)))
    if rounds <= 1:
        return 1
    return max(1, math.ceil(max(cover_distance(mask, axes) for mask in annotated_masks) / (rounds - 1)))


class RegionPatchSampler(PatchSampler):
    """Uniformly random crops inside the labelled regions (the paper's "random 64^3 crops within these subvolumes").

    A region is picked with probability proportional to its volume; the crop lies inside it where the region is
    at least the crop's size along an axis and covers it otherwise. Voxels of the crop without a label (a region
    smaller than the crop) are unknown and do not reach the loss.
    """

    def __init__(self, volumes, dims, patch_size, regions: list[list[tuple]], context_slices: int = 0,
                 augment: bool = False, seed: int = 0) -> None:
        super().__init__(volumes, dims, patch_size, context_slices=context_slices, augment=augment, seed=seed)
        self.regions = [[((tuple(int(v) for v in low)), tuple(int(v) for v in high)) for low, high in boxes]
                        for boxes in regions]
        self._choices = [(v, b) for v in self._usable for b in range(len(self.regions[v]))]
        sizes = np.array([float(np.prod(np.subtract(self.regions[v][b][1], self.regions[v][b][0])))
                          for v, b in self._choices])
        self._weights = sizes / sizes.sum() if sizes.size else sizes

    def _choose_crop(self) -> tuple[int, list[int]]:
        if not self._choices:
            return super()._choose_crop()
        volume_index, box_index = self._choices[int(self.rng.choice(len(self._choices), p=self._weights))]
        low, high = self.regions[volume_index][box_index]
        shape = self.volumes[volume_index].target.shape
        starts = []
        for lo, hi, p, n in zip(low, high, self.full_patch, shape):
            extent = hi - lo
            if extent >= p:
                start = lo + int(self.rng.integers(extent - p + 1))
            else:  # the crop covers the region at a random offset, kept inside the volume where it fits
                start = lo - int(self.rng.integers(p - extent + 1))
                start = int(np.clip(start, 0, n - p)) if n >= p else int(np.clip(start, n - p, 0))
            starts.append(start)
        return volume_index, starts


# --------------------------------------------------------------------------------------------------
# The loop


class GradualLoop(RoundLoop):
    """:class:`RoundLoop` whose round ``r`` trains on GT + pseudo-labels of the regions grown ``r - 1`` times."""

    def __init__(self, name, segmenter, cases, options, reporter, should_stop=None) -> None:
        super().__init__(name, segmenter, cases, options, reporter, should_stop)
        self.settings = parse_settings(options)
        self.axes = (0, 1, 2) if self.settings.grow_axes == "all" else (0,)
        for case in cases:
            if case.annotated is None or case.label is None:
                raise SparseSegError(f"{case.case_id}: gradual learning needs a sparse annotation",
                                     "Give an annotation (slices or boxes) for every case.")
            if not case.annotated.any():
                raise SparseSegError(f"{case.case_id}: empty annotation", "Annotate at least one slice or box.")
        self.images = [normalize(case.image, options.normalization) for case in cases]
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
        reporter.log(f"{name}: {segmenter.network_config.dims}D network, step {self.step} voxel(s) per round "
                     f"({'auto' if self.settings.step == 'auto' else 'given'}), options {self.settings.to_dict()}, "
                     f"{sum(len(b) for b in self.initial_boxes)} annotated region(s)")

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
        case = self.cases[case_index]
        ground_truth = self.ground_truth[case_index]
        grown = self.labelled_mask(case_index, growth)
        if self.settings.relabel == "freeze":
            to_predict = grown & (self.targets[case_index] < 0)
            target = self.targets[case_index].copy()
        else:
            to_predict = grown & ~case.annotated
            target = ground_truth.copy()
        if self.settings.predict == "volume" and previous is not None and case.case_id in previous.probabilities:
            probabilities = previous.probabilities[case.case_id]
        elif self.settings.predict == "volume":
            _, probabilities = self.segmenter.predict(case.image, self.device)
        else:
            probabilities = self.region_probabilities(case_index, growth)
        labels = probabilities.argmax(0).astype(np.int16)
        if self.settings.confidence is not None:
            confident = probabilities.max(0) >= self.settings.confidence
            dropped = int(np.count_nonzero(to_predict & ~confident))
            to_predict &= confident
        else:
            dropped = 0
        target[to_predict] = labels[to_predict]
        target[case.annotated] = ground_truth[case.annotated]  # ground truth is never overwritten
        self.pseudo_stats[case.case_id] = {"pseudo_labelled": int(np.count_nonzero((target >= 0) & ~case.annotated)),
                                           "predicted": int(np.count_nonzero(to_predict)), "unconfident": dropped}
        return target

    def current_volumes(self) -> list[TrainingVolume]:
        return [TrainingVolume(image, target) for image, target in zip(self.images, self.targets)]

    def resume_volumes(self) -> list[TrainingVolume]:
        return self.current_volumes()

    def new_sampler(self, volumes: list[TrainingVolume], index: int) -> PatchSampler:
        if self.settings.crops == "labelled":
            return super().new_sampler(volumes, index)
        network_config = self.segmenter.network_config
        seed = self.options.seed if index <= 1 else self.options.seed * 1000 + index
        regions = [self.grown_boxes(i, self.growth) for i in range(len(self.cases))]
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
            "labelled_fraction": round(float(sum(labelled) / sum(total)), 6),
            "ground_truth_voxels": int(sum(int(c.annotated.sum()) for c in self.cases)),
            "pseudo_labelled_voxels": int(sum(s["pseudo_labelled"] for s in self.pseudo_stats.values())),
            "unconfident_voxels": int(sum(s["unconfident"] for s in self.pseudo_stats.values())),
            "covered": covered,
            "gradual": {**self.settings.to_dict(), "step": self.step},
        }


@register("gradual")
class GradualLearning:
    summary = ("Gradual Learning (Engster et al.): grow the annotated boxes/slices by s voxels per round with "
               "pseudo-labels; --network 3d = 3D GL, 2d = slice-stack GL")

    def check_options(self, options: MethodOptions) -> None:
        extra = {k: v for k, v in (options.extra or {}).items() if k != "rounds"}  # rounds: a cohort setting of train
        parse_settings(replace(options, extra=extra))

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        parse_settings(options)  # bad options fail before the network is built
        segmenter = new_segmenter(cases, options, self.name)
        loop = GradualLoop(self.name, segmenter, cases, options, reporter, should_stop)
        if state is not None and (state.get("method_state") or {}).get("covered_at") and loop.settings.stop_when_covered:
            return  # the run already ended when the volume was covered
        self.loop = loop
        for result in loop.run(state):
            covered = bool(result.metrics.get("covered"))
            if covered and loop.settings.stop_when_covered and result.index < result.total:
                reporter.log(f"{self.name}: the volume is covered after round {result.index}; stopping")
                yield replace(result, total=result.index)
                return
            yield result

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        """All rounds (``options.rounds``, or the ``rounds`` option / the paper's 11 when that is 1); the last network."""
        rounds = int(options.rounds)
        if rounds == 1:
            rounds = int((options.extra or {}).get("rounds", PAPER_ROUNDS))
        options = replace(options, rounds=rounds, extra={k: v for k, v in (options.extra or {}).items() if k != "rounds"})
        history = []
        for result in self.run_rounds(cases, options, reporter):
            history.append({k: v for k, v in result.metrics.items() if k != "gradual"})
        segmenter = self.loop.segmenter
        segmenter.training = {"stage": self.name, "rounds": history, "options": self.loop.settings.to_dict(),
                              "step": self.loop.step, "iterations_per_round": options.round_iterations(segmenter.network_config.dims),
                              "note": "validation cases are not used by gradual learning"}
        return segmenter
