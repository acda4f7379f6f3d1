"""``collaborative``: collaborative learning of semi- and self-supervised pseudo-labels (Osman, Li, Huang, Wang;
seed collaborative-learning.md, methods.md section 4). ``collaborative-faithful`` runs the paper's settings;
``collaborative`` our default options (:data:`~.settings.IMPROVED`: the single-scan default propagates each
volume's labelled slice, ``registration=propagate``, the final network learns from the labels it gives,
``branches=registration, propagate_targets=labels``, as one 2D network per slice axis, ``final_axes=0,1,2``; its
predictions say object above a threshold measured so that the networks label as much object over their training
volumes as their targets hold, ``prediction_threshold=auto``, and keep their largest component with holes filled,
``postprocess=lcc-fill``).

Only whole labelled slices (the central slice of every training volume in the paper) are ground truth.

1. **Registration branch** (self-supervised): a 2D registration network learns to align neighbouring slices by
   image similarity alone and carries each labelled slice outwards, slice by slice (``registration=demons``: the
   training-free demons fields of the single-scan default instead).
2. **Semi-supervised branch**: a 2D segmentation network trained on the labelled slices, then also on its own
   argmax pseudo-labels of the other slices, recomputed every epoch and weighted by a ramped alpha(t).
3. **Fusion** and **final network**: certain = both branches agree, uncertain = only one says object; the final
   network learns from ground truth + certain labels + beta-weighted uncertain labels.

Cohorts run through ``sparseseg train/predict/bench`` (:meth:`CollaborativeMethod.train`); one scan runs as a worker
job whose rounds stream each stage's result (:meth:`CollaborativeMethod.run_rounds`): registration propagation, then
the semi branch's network, then the final network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from ...case import Case, Geometry
from ...engine.axis_ensemble import scan_axes
from ...engine.device import select_device
from ...engine.networks import build_network, default_patch_size
from ...engine.postprocess import class_part_counts, object_count, painted_holes, without_fill
from ...errors import SparseSegError
from ...jobs.regions import whole_slice_axis
from ..base import MethodOptions, Reporter, RoundResult, register
from ..common import across_axis, network_snapshot
from .axes import collaborative_segmenter, train_final_across_axes
from .branches import (Scan, final_targets, predict_normalised, registration_branch, registration_labels, scan_of,
                       semi_branch)
from .calibration import calibrate, measured_threshold
from .propagated import Propagated
from .refine import classed_volume, prediction_labels, refined_targets, refined_volume
from .settings import FAITHFUL, IMPROVED, CollaborativeSettings

STATE_FORMAT = 1


def stages(settings: CollaborativeSettings) -> tuple[str, ...]:
    """The job's rounds, in order: each branch that runs, the final network, then each refine round."""
    return ((("registration",) if settings.uses_registration else ()) + (("semi",) if settings.uses_semi else ())
            + ("final",) + ("refine",) * settings.refine)


@register("collaborative")
class CollaborativeMethod:
    """Semi-supervised and registration pseudo-labels fused by agreement, then a final 2D network; ``preset`` gives
    the options a variant starts from."""

    preset: dict = IMPROVED
    #: planned_rounds reads the paint from the state: new paint starts a new stage (SparseSegLib.worker.stages)
    plans_stages = True
    summary = ("collaborative learning, our default: each volume's labelled slice propagated by the single-scan default "
               "(registration + a network on that scan, fused), then final 2D networks across the three axes on its "
               "labels, object threshold measured per model, largest component kept")

    def settings(self, options: MethodOptions) -> CollaborativeSettings:
        """The preset, then the options (``--option``, a job's ``method_options``)."""
        return CollaborativeSettings.parse(options.extra, self.preset, self.name)

    def check_options(self, options: MethodOptions) -> None:
        self.settings(options)
        if options.network != "2d":
            raise SparseSegError(f"collaborative trains 2D networks, not {options.network}", "Use --network 2d.")

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None):
        """One model for a cohort (validation cases are not used: the paper selects no checkpoint)."""
        self.check_options(options)
        settings = self.settings(options)
        device = select_device(options.device)
        scans = [scan_of(case, options.normalization) for case in cases]
        segmenter = collaborative_segmenter(cases, options, self.name, settings)
        _set_prediction_rules(segmenter, settings)
        started, record = time.perf_counter(), {"settings": settings.__dict__.copy()}
        registration = semi = None
        if settings.uses_registration:
            registration, record["registration"] = registration_branch(
                scans, segmenter.num_classes, settings, device, options.seed, reporter, f"{self.name} registration")
            record["registration"]["seconds"] = round(time.perf_counter() - started, 1)
        if settings.uses_semi:
            tick = time.perf_counter()
            semi_segmenter = collaborative_segmenter(cases, options, f"{self.name}-semi", settings)
            semi, record["semi"] = semi_branch(semi_segmenter, scans, settings, options, device, reporter, f"{self.name} semi")
            record["semi"]["seconds"] = round(time.perf_counter() - tick, 1)
        volumes, record["fusion"] = final_targets(scans, semi, registration, settings, segmenter.num_classes)
        tick = time.perf_counter()
        segmenter, record["final"] = train_final_across_axes(cases, volumes, settings, options, self.name, device, reporter,
                                                             f"{self.name} final", first=segmenter)
        _set_prediction_rules(segmenter, settings, scans, volumes, device, record["final"])
        record["final"]["seconds"] = round(time.perf_counter() - tick, 1)
        for round_index in range(1, settings.refine + 1):  # self-training: new networks on the networks' labels
            tick = time.perf_counter()
            volumes, counts = refined_targets(segmenter, scans, volumes, registration, settings, device)
            segmenter, trained = train_final_across_axes(
                cases, volumes, settings, replace(options, seed=options.seed + 1000 * round_index), self.name, device,
                reporter, f"{self.name} refine {round_index}/{settings.refine}")
            _set_prediction_rules(segmenter, settings, scans, volumes, device, trained)
            record.setdefault("refine", []).append({**trained, **counts, "seconds": round(time.perf_counter() - tick, 1)})
        record["seconds"] = round(time.perf_counter() - started, 1)
        segmenter.training = record
        return segmenter

    def segmenter_from_state(self, cases: list[Case], options: MethodOptions, state: dict):
        """Save model: the newest network round's network, running across the painted axis as the job trained it."""
        if not state.get("network"):
            raise SparseSegError("this job has no trained network yet (only the registration round has run)",
                                 "Wait for the next round, then save the model.")
        axis = whole_slice_axis(cases[0].annotated) if cases[0].annotated is not None else None
        settings = self.settings(options)
        segmenter = across_axis(collaborative_segmenter(cases, options, self.name, settings), axis or 0, cases, options)
        _set_prediction_rules(segmenter, settings)
        if state.get("prediction_threshold") is not None:  # prediction_threshold=auto: measured by the round
            segmenter.object_threshold = float(state["prediction_threshold"])
        segmenter.objects = int(state.get("objects") or 1)  # the objects the round's targets held
        if state.get("holes"):  # the paint showed background the object encloses: no hole filling
            segmenter.postprocess = without_fill(segmenter.postprocess)
        if len(settings.member_axes) > 1:  # final_axes / final_seeds: networks across axes of the painted frame
            axes, swap = scan_axes(settings.member_axes, axis or 0)
            config = replace(segmenter.network_config, axes=axes, swap_in_plane=swap if any(swap) else (),
                             class_members=settings.class_members(1, segmenter.num_classes))
            segmenter = replace(segmenter, network=build_network(config, segmenter.num_classes), network_config=config,
                                patch_size=default_patch_size(cases[0].image.shape, config))
        try:
            segmenter.network.load_state_dict(state["network"])
        except RuntimeError as error:
            raise SparseSegError(f"the checkpoint does not fit this job's network ({str(error).splitlines()[0][:160]})",
                                 "The job's settings changed since the checkpoint was written; run the job again.") from None
        return segmenter

    def planned_rounds(self, case: Case, options: MethodOptions, state: dict | None = None) -> int:
        """The last round of this job's stage: a stage is one round per step; new paint since ``state`` (a Continue)
        starts a new stage after the state's round."""
        plan = stages(self.settings(options))
        first, _ = _stage(state, plan, _paint_key(case), self.name)
        return first + len(plan) - 1

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        """One scan: a round per stage (registration, semi, final), each a full-volume result; painted voxels are
        ground truth and come back unchanged. ``state`` resumes after its round."""
        if len(cases) != 1:
            raise SparseSegError(f"a collaborative job runs on one scan, not {len(cases)}", "Run one job per scan, "
                                 "or train a cohort with `sparseseg train --method collaborative`.")
        self.check_options(options)
        settings = self.settings(options)
        plan = stages(settings)
        device = select_device(options.device)
        case = cases[0]
        if case.annotated is None or case.label is None:
            raise SparseSegError(f"case {case.case_id} has no annotation", "Paint at least one slice of the object.")
        axis = whole_slice_axis(case.annotated)
        if axis is None and settings.uses_registration:
            raise SparseSegError("the annotation has no whole painted slices to propagate from (ROI boxes?)",
                                 "Paint whole slices, or use the option branches=semi.")
        moved = _moved_case(case, axis or 0)
        scan = scan_of(moved, options.normalization)
        segmenter = collaborative_segmenter([moved], options, self.name, settings)
        paint = _paint_key(case)
        first, done = _stage(state, plan, paint, self.name)
        total = first + len(plan) - 1
        kept = dict(state or {}) if done >= first else {}  # a new stage recomputes both branches from the new paint
        registration = _kept_registration(kept)
        semi = [kept["semi"].numpy()] if kept.get("semi") is not None else None
        network_result = kept["final_labels"].numpy() if kept.get("final_labels") is not None else None
        for index in range(done + 1, total + 1):
            started, kind = time.perf_counter(), plan[index - first]
            stage = f"{self.name} round {index}/{total} ({kind})"
            if kind == "registration":
                registration, record = registration_branch([scan], segmenter.num_classes, settings, device, options.seed,
                                                           reporter, stage, should_stop)
                probabilities = registration[0].probabilities
            elif kind == "semi":
                semi_segmenter = collaborative_segmenter([moved], options, f"{self.name}-semi", settings)
                semi, record = semi_branch(semi_segmenter, [scan], settings, options, device, reporter, stage, should_stop)
                probabilities, network = semi[0], semi_segmenter.network
            elif kind == "final":
                volumes, counts = final_targets([scan], semi, registration, settings, segmenter.num_classes)
                final, trained = train_final_across_axes([moved], volumes, settings, options, self.name, device, reporter,
                                                         stage, should_stop, first=segmenter)
                record = {**trained, **counts}
                probabilities, network = predict_normalised(final, scan.image, device), final.network
                threshold = _round_threshold(settings, probabilities, volumes[0], record)
                objects = object_count([volumes[0].target])
                holes = labelled_holes([scan], volumes)
            else:  # refine: self-training on the previous network round's labels
                if settings.refine_targets == "classes":  # the final stage's targets, classed by the networks
                    (previous,), _ = final_targets([scan], semi, registration, settings, segmenter.num_classes)
                    volume = classed_volume(network_result, scan, previous)
                else:
                    volume = refined_volume(network_result, scan, registration[0] if registration else None, settings,
                                            settings.split_from_labelled(1, segmenter.num_classes))
                final, record = train_final_across_axes([moved], [volume], settings,
                                                        replace(options, seed=options.seed + 1000 * index), self.name,
                                                        device, reporter, stage, should_stop)
                probabilities, network = predict_normalised(final, scan.image, device), final.network
                threshold = _round_threshold(settings, probabilities, volume, record)
                objects = object_count([volume.target])
                holes = labelled_holes([scan], [volume])
            labels = probabilities.argmax(0).astype(np.uint8)
            if kind == "registration":  # what the final network will learn from
                labels = registration_labels(registration[0], settings).astype(np.uint8)
            if kind in ("final", "refine"):  # the final network's result as the cohort model gives it
                labels = prediction_labels(probabilities, threshold,
                                           without_fill(settings.postprocess) if holes else settings.postprocess, objects)
            labels[scan.labelled] = scan.target[scan.labelled]
            if kind in ("final", "refine"):
                network_result = labels
            kept = {"format": STATE_FORMAT, "method": self.name, "round": index, "rounds": total, "stage_first": first,
                    "steps": list(plan), "paint": paint,
                    "network": network_snapshot(network) if kind != "registration" else {},
                    "registration": _as_tensor([r.probabilities for r in registration] if registration else None),
                    "registration_labels": _as_tensor([registration[0].labels], np.uint8)
                    if registration and registration[0].labels is not None else None,
                    "semi": _as_tensor(semi),
                    "final_labels": _as_tensor([network_result], np.uint8) if network_result is not None else None,
                    "prediction_threshold": threshold if kind in ("final", "refine") else None,
                    "objects": objects if kind in ("final", "refine") else None,
                    "holes": holes if kind in ("final", "refine") else None}
            metrics = {"step": kind, "foreground_voxels": int((labels > 0).sum()),
                       "seconds": round(time.perf_counter() - started, 3),
                       **{k: v for k, v in record.items() if isinstance(v, (int, float, str))}}
            yield RoundResult(index=index, total=total, labels={case.case_id: _moved_back(labels, axis or 0)},
                              probabilities={case.case_id: _moved_back(probabilities.astype(np.float32), axis or 0, lead=1)},
                              metrics=metrics, state=kept)


@register("collaborative-faithful")
class CollaborativeFaithful(CollaborativeMethod):
    preset = FAITHFUL
    summary = ("collaborative learning as in Osman et al. (registration network + semi-supervised pseudo-labels, "
               "the paper's weighted fusion)")


def _set_prediction_rules(segmenter, settings: CollaborativeSettings, scans: list | None = None,
                          volumes: list | None = None, device: torch.device | None = None,
                          record: dict | None = None) -> None:
    """What a model applies to every prediction, stored with it: the object threshold (``auto``: measured on the
    training ``scans`` against ``volumes``, noted in ``record``), then the post-processing, whose largest-component
    step keeps as many components as the training targets hold objects (and, with ``class_parts``, parts per class)."""
    segmenter.postprocess = settings.postprocess
    segmenter.object_threshold = settings.fixed_threshold or 0.0
    if volumes is not None and scans is not None and labelled_holes(scans, volumes):
        segmenter.postprocess = without_fill(settings.postprocess)
        if record is not None:
            record["holes"] = True
    if volumes is not None:
        segmenter.objects = object_count([volume.target for volume in volumes])
        if settings.counts_class_parts(len(volumes), segmenter.num_classes):
            segmenter.class_parts = class_part_counts([volume.target for volume in volumes], segmenter.num_classes)
        if record is not None:
            record.update(objects=segmenter.objects, class_parts=list(segmenter.class_parts))
    if settings.fixed_threshold is None and scans is not None:
        record.update(calibrate(segmenter, scans, volumes, device))


def labelled_holes(scans: list[Scan], volumes: list) -> bool:
    """Whether most training targets enclose (in 3D) background that their volume's labelled slices call
    background: the objects have real holes (brain tissue around the ventricles), which the model's
    post-processing must not fill. The single-scan default's rule
    (:func:`~SparseSegLib.engine.postprocess.painted_holes`) over a cohort, by majority: one volume's stray
    enclosed voxel is an outline's accident, not the anatomy (the hippocampus' full labels enclose 1-17 background
    voxels in 12 of 200 volumes; docs/results/collaborative-default.md, "Twenty-fifth session"), so it does not
    take every volume's filling away."""
    enclosing = sum(painted_holes(volume.target, scan.labelled & (scan.target == 0)) for scan, volume in zip(scans, volumes))
    return 2 * enclosing > len(volumes)


def _round_threshold(settings: CollaborativeSettings, probabilities: np.ndarray, volume, record: dict) -> float:
    """A job round's object threshold: the fixed one, or (``auto``) measured on the scan against its targets."""
    if settings.fixed_threshold is not None:
        return settings.fixed_threshold
    record.update(measured_threshold([(probabilities, volume.target)]))
    return record["prediction_threshold"]


def _moved_case(case: Case, axis: int) -> Case:
    """The case with its painted slices along axis 0 (geometry only sized: the branches work in voxels)."""
    move = lambda array: None if array is None else np.ascontiguousarray(np.moveaxis(array, axis, 0))  # noqa: E731
    image = move(case.image)
    spacing = case.geometry.spacing_kji
    moved_spacing = (spacing[axis],) + tuple(spacing[a] for a in range(3) if a != axis)
    geometry = Geometry(size=tuple(int(n) for n in image.shape[::-1]), spacing=tuple(float(s) for s in moved_spacing[::-1]))
    return Case(case.case_id, image, geometry, move(case.label), move(case.annotated), dict(case.class_names),
                dict(case.class_colors))


def _moved_back(array: np.ndarray, axis: int, lead: int = 0) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(array, lead, lead + axis))


def _as_tensor(results: list[np.ndarray] | None, dtype: type = np.float32) -> torch.Tensor | None:
    return None if results is None else torch.from_numpy(np.ascontiguousarray(results[0], dtype=dtype))


def _kept_registration(kept: dict) -> list[Propagated] | None:
    """The registration branch's result from a round state (its own labels: stored since propagate_targets)."""
    if kept.get("registration") is None:
        return None
    labels = kept.get("registration_labels")
    return [Propagated(kept["registration"].numpy(), None if labels is None else labels.numpy())]


def _paint_key(case: Case) -> list[int]:
    """What identifies a stage's annotation: the annotated voxel count and the annotated slices along each axis."""
    annotated = np.asarray(case.annotated, dtype=bool) if case.annotated is not None else np.zeros(case.image.shape, bool)
    return [int(annotated.sum())] + [int(annotated.any(axis=tuple(a for a in range(3) if a != axis)).sum()) for axis in range(3)]


def _stage(state: dict | None, plan: tuple[str, ...], paint: list[int], method: str = "collaborative") -> tuple[int, int]:
    """``(first round of this stage, last round done)``: a fresh job starts at 1; a resumed one with the same paint
    continues its stage; new paint (a Continue) starts a new stage after the state's round."""
    if not state:
        return 1, 0
    if state.get("method") != method or int(state.get("format", 0)) != STATE_FORMAT:
        raise SparseSegError(f"the checkpoint is from method {state.get('method')!r}, not {method}",
                             "Resume with the job that wrote it, or start again in a new folder.")
    done = int(state["round"])
    if list(state.get("paint", [])) != list(paint):
        return done + 1, done
    if list(state.get("steps", [])) != list(plan):
        raise SparseSegError("the checkpoint was written with other branches", "Resume with the job's own options.")
    return int(state.get("stage_first", 1)), done


__all__ = ["CollaborativeFaithful", "CollaborativeMethod", "CollaborativeSettings", "Scan", "stages"]
