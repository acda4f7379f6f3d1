"""``propagate``: one scan, a few painted slices -> the whole object, in two streamed rounds per stage.

What a user pressing Start gets (the single-scan default, :mod:`SparseSegLib.defaults`):

1. **Registration round** (seconds): the painted slices' labels travel through the volume slice by slice,
   each neighbouring pair registered with 2D demons (:mod:`SparseSegLib.engine.propagation`); gaps between
   painted slices are filled from both ends.
2. **Network round** (a minute or two on a CPU): a small 2.5D U-Net learns from the painted slices, the
   propagated labels of the nearby slices and background far from the propagated object; its prediction is
   fused with the registration's (by default a voxel is kept where both agree: the collaborative-learning seed's
   certain region) and the result keeps only components that touch the paint.

Painted slices are ground truth and come back unchanged. Each Continue (new painted slices) is a new stage:
both rounds again, from every slice painted so far, the network warm-started from the previous stage.
ROI boxes have no whole slices to propagate from: their registration round carries the paint of each box face that
holds object outwards instead (:mod:`.box_prior`), and the network round trains on the boxes' voxels and fuses with
it as with slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from ...case import Case
from ...engine.device import select_device
from ...engine.intensity_gate import IntensityEvidence
from ...engine.postprocess import object_count, painted_holes
from ...engine.propagation import (PropagationSettings, demons_levels_for, open_end_reach, propagate_slices,
                                   registration_shrink, slice_distance)
from ...errors import SparseSegError
from ..base import MethodOptions, PartReporter, Reporter, RoundResult, register
from .box_prior import box_prior
from .fusion import (anchor_at_paint, classes_follow_registration, classes_from_registration, fuse, open_ends,
                     prediction_region)
from .network import train_across_axes, training_targets
from .network_grid import CoarseGrid
from .settings import PropagateSettings, job_settings
from .suggestion import RULES as SUGGESTION_RULES, nearest_paint_plane, other_view_slice
from .volume import PaintedVolume, class_count

STATE_FORMAT = 1


@register("propagate")
class PropagateMethod:
    """Registration propagation of the painted slices, then a network fused with it (streamed per round)."""

    summary = "one scan: painted slices registered through the volume, then a 2D network fused with them"
    #: planned_rounds reads the paint from the state: new paint starts a new stage (SparseSegLib.worker.stages)
    plans_stages = True

    def check_options(self, options: MethodOptions) -> None:
        """Bad method options, and a 3D network asked of a method that trains 2D ones, fail before any work (the
        module's Network choice would otherwise be ignored without a word)."""
        PropagateSettings.parse(options.extra)
        if str(options.network).lower() != "2d":
            raise SparseSegError(f"{self.name} trains 2D networks (across the three axes), not {options.network}",
                                 "Set Network to 2d (--network 2d), or choose a method with a 3D network "
                                 "(gradual, mean-teacher).")

    def memory_settings(self, options: MethodOptions) -> tuple[int, tuple[int, int]]:
        """The batch and the in-plane patch (its largest) the networks train with: what the worker halves after
        running out of GPU memory (:func:`~SparseSegLib.worker.memory.reduce_memory`)."""
        settings = job_settings(options)
        return settings.batch_size, (settings.patch, settings.patch)

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation=None):
        raise SparseSegError("propagate segments one scan at a time (a worker job), it does not train a cohort model",
                             "Use `sparseseg run --image ... --annotation ...`, or train a cohort with self-labelling.")

    def segmenter_from_state(self, cases: list[Case], options: MethodOptions, state: dict):
        """Save model: the stage's networks as one model folder (:mod:`.model`)."""
        from .model import segmenter_from_state

        return segmenter_from_state(cases[0], options, state)

    def planned_rounds(self, case: Case, options: MethodOptions, state: dict | None = None) -> int:
        """Rounds this job runs when the job leaves it to the method: the stage's rounds after ``state``'s."""
        settings = job_settings(options)
        volume = PaintedVolume.from_case(case, settings)
        return _StagePlan.make(volume, state).last_round

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        if len(cases) != 1:
            raise SparseSegError(f"propagate runs on one scan, not {len(cases)}", "Run one job per scan.")
        self.check_options(options)
        settings = job_settings(options)
        if options.budget not in (None, "quick"):  # the one budget a job gets without asking
            reporter.warning(f"{self.name} has no training budget: '{options.budget}' changes nothing",
                             f"Its network round trains {settings.iterations} iterations per stage; set Iterations "
                             "per round (--iterations-per-round) to train longer.")
        case = cases[0]
        volume = PaintedVolume.from_case(case, settings)
        plan = _StagePlan.make(volume, state)
        total = max(plan.last_round, int(options.rounds or 0))  # rounds asked beyond the stage: more network rounds
        device = select_device(options.device)
        initial = state.get("network") if state else None
        registration = None
        network_grid = int(state.get("network_grid", 1)) if state else 1  # the in-plane shrink ``initial`` saw
        num_classes = class_count(case)
        for index in range(plan.next_round, total + 1):
            started = time.perf_counter()
            kind = plan.kind(index)
            if (kind == "registration" or registration is None) and not volume.painted:  # ROI boxes
                registration = split = _box_registration(volume, settings, num_classes, should_stop)
                by_registration = False
            elif kind == "registration" or registration is None:
                evidence = _evidence(volume, settings)
                levels = settings.demons_levels or demons_levels_for(volume.spacing)
                by_registration = num_classes > 2 and classes_follow_registration(
                    settings.classes, volume.image, volume.label, volume.annotated)
                passes = 2 if levels > 1 and by_registration else 1
                stage = f"propagate round {index}/{total}: registering slices"
                registration = _registered(volume, settings, num_classes, evidence, levels, should_stop,
                                           _pair_progress(PartReporter(reporter, 0, passes), stage))
                split = (_registered(volume, settings, num_classes, evidence, 1, should_stop,
                                     _pair_progress(PartReporter(reporter, 1, passes), stage))
                         if passes == 2 else registration)
            if kind == "registration":
                probabilities, network_state = registration, initial
                labels = registration.argmax(0).astype(np.uint8)
                if split is not registration:
                    labels = classes_from_registration(labels, split)
                shrink = _shrink(volume, settings)
                if not volume.painted:
                    reporter.log(f"propagate round {index}: ROI boxes, the object registered outwards from the box "
                                 "faces its paint touches")
                else:
                    reporter.log(f"propagate round {index}: painted slices {volume.painted} along axis {volume.axis} "
                                 f"registered through {volume.image.shape[0]} slices"
                                 + (f" (demons at {levels} resolutions: slices {volume.spacing[0]:g} mm apart)"
                                    if levels > 1 else "")
                                 + (f" (on a grid {shrink} times coarser than its {volume.image.shape[1]}x"
                                    f"{volume.image.shape[2]} pixels per slice)" if shrink > 1 else ""))
            else:
                distance = slice_distance(volume.image.shape[0], volume.painted) if volume.painted else None
                target, weight = training_targets(volume.label, volume.painted, registration, distance, settings,
                                                  annotated=volume.annotated)
                region = (prediction_region(registration, settings.object_threshold, PREDICTION_CONTEXT)
                          if registration is not None and settings.fusion == "average" else None)
                grid = CoarseGrid.for_crop(volume.image.shape, settings.network_max_pixels)
                if grid.factor > 1:
                    reporter.log(f"propagate round {index}: networks on a grid {grid.factor} times coarser than the "
                                 f"crop's {volume.image.shape[1]}x{volume.image.shape[2]} pixels per slice")
                network, network_state = train_across_axes(
                    volume.image, target, weight, num_classes, settings, options.seed + settings.seed_offset + index,
                    device, reporter, f"propagate round {index}/{total}", should_stop, initial, region, grid)
                network_grid = grid.factor
                if region is not None:  # outside the box the fused maps are the registration's
                    network = _embedded(network, region, registration)
                initial = network_state
                if registration is None:
                    labels, probabilities = network.argmax(0).astype(np.uint8), network
                else:
                    labels, probabilities = fuse(network, registration, settings.fusion, settings.fusion_margin,
                                                       settings.object_threshold)
                    if by_registration:
                        labels = classes_from_registration(labels, split)
                    if settings.end_opening > 0:
                        labels = open_ends(labels, volume.painted,
                                           settings.end_opening * volume.largest_painted_thickness_mm(), volume.spacing)
            if settings.anchor:
                labels = anchor_at_paint(labels, volume.painted_foreground, volume.painted_background)
            labels[volume.annotated] = volume.label[volume.annotated]  # the paint is ground truth, exactly
            state = {"format": STATE_FORMAT, "method": "propagate", "round": index, "rounds": total,
                     "network": network_state or {}, "network_grid": network_grid, "stage_first": plan.first_round,
                     "painted": [int(s) for s in volume.painted], "annotated_voxels": int(volume.annotated.sum()),
                     "objects": object_count([labels]),  # Save model's largest-component step keeps that many
                     "holes": painted_holes(labels, volume.painted_background)}  # ... and fills no hole if True
            metrics = {"step": kind, "stage_first_round": plan.first_round, "painted_slices": len(volume.painted),
                       "foreground_voxels": int((labels > 0).sum()), "seconds": round(time.perf_counter() - started, 3)}
            suggestion = _suggestion(volume, labels, settings.suggest)
            if suggestion is not None:
                metrics["suggested_slice"] = suggestion
            result = RoundResult(index=index, total=total, labels={case.case_id: volume.to_case_grid(labels)},
                                 probabilities={case.case_id: _background_outside(volume.to_case_grid(probabilities))},
                                 metrics=metrics, state=state)
            # the crop's maps of this round are in the result: not held while the worker writes it and the next
            # round runs (on a 512 x 512 x 300 scan's crop, 0.5 GiB each); the registration stays for later rounds
            labels = probabilities = network = target = weight = region = None
            yield result


def _registered(volume: PaintedVolume, settings: PropagateSettings, num_classes: int, evidence, levels: int,
                should_stop, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The registration round's class probabilities with ``levels`` coarse-to-fine levels.

    Coarse levels follow an outline across thick slices but move the boundary between parts of one structure
    that the image does not show (the hippocampus' head and body), so where the classes come from the
    registration the split is taken from a one-level chain (docs/results/interactive.md, "Twentieth session")."""
    registration = propagate_slices(
        volume.image, volume.label, volume.painted, num_classes,
        PropagationSettings(settings.demons_iterations, settings.demons_smoothing, levels=levels,
                            finest=_shrink(volume, settings)),
        should_stop=should_stop, open_end_reach=_reach_of(volume, settings),
        empty_gap=settings.empty_gap, end_shape=settings.end_shape, workers=registration_workers(),
        refine=evidence.trim if evidence is not None and settings.intensity == "chain" else None, progress=progress,
        known_reach=volume.known_reach if volume.has_cross else None)
    return evidence.update(registration) if evidence is not None else registration


def _box_registration(volume: PaintedVolume, settings: PropagateSettings, num_classes: int,
                      should_stop) -> np.ndarray:
    """ROI boxes' counterpart of :func:`_registered` (:mod:`.box_prior`): the same demons, open ends and intensity
    evidence, from each box face's paint."""
    evidence = _evidence(volume, settings)
    prior = box_prior(volume, num_classes, settings.open_end, (settings.demons_iterations, settings.demons_smoothing),
                      evidence if settings.intensity == "chain" else None, should_stop, settings.end_shape)
    return evidence.update(prior) if evidence is not None else prior


def _evidence(volume: PaintedVolume, settings: PropagateSettings) -> IntensityEvidence | None:
    """The painted intensities' evidence both registration rounds use (None with ``intensity=none``)."""
    if settings.intensity == "none":
        return None
    return IntensityEvidence.from_paint(volume.image, volume.label, volume.annotated, settings.intensity_ring)


def _pair_progress(reporter: Reporter, stage: str) -> Callable[[int, int], None]:
    """The registration round's slice pairs as progress: the wait before a user's first result (tens of seconds on
    a 240 x 240 x 155 scan, minutes on a CT-sized one) shows a moving bar and an ETA, as training does. A second,
    one-level chain for the class split gets a :class:`~SparseSegLib.methods.base.PartReporter` of the same bar."""
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        reporter.progress(stage, done, total, None, (time.perf_counter() - started) / max(done, 1))
    return progress


#: Voxels of context the networks see around the box they predict (:func:`.fusion.prediction_region`): a quarter
#: of the default patch, so the box's edge lies far from any voxel the fusion can still call object.
PREDICTION_CONTEXT = 32


def _suggestion(volume: PaintedVolume, labels: np.ndarray, rule_name: str) -> dict | None:
    """The round's suggested slice on the case's own grid (``{"axis", "index"}``), or None (:mod:`.suggestion`)."""
    rule = SUGGESTION_RULES.get(rule_name)
    if rule is None:
        return None
    if volume.axis is None:  # ROI boxes: any axis, by the paint's distance in 3D
        plane = nearest_paint_plane(labels, volume.annotated, volume.spacing)
        if plane is None:
            return None
        axis, index = plane
        return {"axis": axis, "index": index + (volume.window[axis - 1].start if axis > 0 else 0)}
    if rule_name == "view" and not volume.has_cross and (across := other_view_slice(labels)) is not None:
        moved, index = across
        axes = [a for a in range(3) if a != volume.axis]  # the moved grid's axes 1 and 2 on the case's grid
        return {"axis": axes[moved - 1], "index": index + volume.window[moved - 1].start}
    index = rule(labels, volume.painted)
    return None if index is None else {"axis": int(volume.axis), "index": index}


def _embedded(inside: np.ndarray, region: tuple[slice, slice, slice], outside: np.ndarray) -> np.ndarray:
    """``outside`` with ``inside`` written into its ``region`` (class axis first)."""
    full = outside.copy()
    full[(slice(None),) + region] = inside
    return full


def _shrink(volume: PaintedVolume, settings: PropagateSettings) -> int:
    """How many times coarser than the crop's slices the registration runs (1: their own grid)."""
    return registration_shrink(volume.image.shape[1:], settings.demons_max_pixels)


def registration_workers() -> int:
    """Processes for the registration round: the worker's CPU threads (the job's ``threads``, else torch's default,
    one per core), so a job or benchmark held to one thread stays on one core."""
    import torch

    return torch.get_num_threads()


def _reach_of(volume: PaintedVolume, settings: PropagateSettings):
    """The open-end reach per painted slice (None: open ends never fade)."""
    if not settings.open_end:
        return None
    return lambda start: open_end_reach(volume.label[start], volume.spacing, settings.open_end)


def _background_outside(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities put back on the full grid: outside the crop the background is certain."""
    outside = probabilities.sum(0) == 0
    probabilities[0][outside] = 1.0
    return probabilities


class _StagePlan:
    """Which rounds this run still owes: a stage is a registration round (of the painted slices, or of ROI boxes'
    faces) then a network round. A job with new paint since ``state`` starts a new stage after the state's round; the same
    paint with a finished stage owes nothing; an interrupted stage finishes."""

    def __init__(self, first_round: int, next_round: int, steps: tuple[str, ...]) -> None:
        self.first_round, self.next_round, self.steps = first_round, next_round, steps

    @property
    def last_round(self) -> int:
        return self.first_round + len(self.steps) - 1

    def kind(self, index: int) -> str:
        position = index - self.first_round
        return self.steps[position] if position < len(self.steps) else "network"  # rounds asked beyond the stage

    @classmethod
    def make(cls, volume: PaintedVolume, state: dict | None) -> _StagePlan:
        steps = ("registration", "network")
        if not state:
            return cls(1, 1, steps)
        if state.get("method") != "propagate" or int(state.get("format", 0)) != STATE_FORMAT:
            raise SparseSegError(f"the checkpoint is from method {state.get('method')!r}, not propagate",
                                 "Continue with the job that wrote it, or start again in a new folder.")
        done = int(state["round"])
        same_paint = (list(state.get("painted", [])) == volume.painted
                      and int(state.get("annotated_voxels", -1)) == int(volume.annotated.sum()))
        first = int(state.get("stage_first", 1))
        if same_paint:
            return cls(first, done + 1, steps)
        return cls(done + 1, done + 1, steps)
