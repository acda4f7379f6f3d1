"""A worker job (one volume, the Slicer use): rounds streamed on the painted axis, and Save model.

A mixin of :class:`~.method.SelfLabelling`. The user may paint across any array axis; the 2D networks work on
slices across it, so the job transposes the volume to bring that axis first and every result back (:func:`job_frame`).
Training and Save model must agree on that frame, which is why both live here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from ...case import Case, Geometry
from ...engine.axis_ensemble import AxisEnsemble
from ...engine.model import Segmenter
from ...engine.networks import default_patch_size
from ...errors import SparseSegError
from ..base import MethodOptions, Reporter, RoundResult
from .loop import SelfLabellingLoop
from .schedule import natural_rounds


class JobRounds:
    """``run_rounds`` and ``segmenter_from_state``; needs ``name``, ``job_settings`` and ``build`` of the method."""

    name: str

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        """``options.rounds`` rounds on the job's volume(s), a full prediction streamed after each.

        The 2D network works on slices across the axis the user painted (the axis with the fewest annotated
        slices): the volumes are transposed so that it comes first, and every result is transposed back.
        """
        settings = self.job_settings(options)
        axis, order, work = job_frame(cases)
        inverse = tuple(int(a) for a in np.argsort(order))
        segmenter = self.build(work, options, settings)
        loop = SelfLabellingLoop(self.name, segmenter, work, options, reporter, settings, should_stop=should_stop,
                                 total_rounds=int(options.rounds))
        if axis:
            reporter.log(f"{self.name}: annotated slices lie across array axis {axis}; the 2D network runs along it")
        cohort_only = [name for name, on in ((f"ensemble {settings.ensemble}", settings.ensemble > 1),
                                             ("the 3D student", settings.student_3d)) if on]
        if cohort_only:
            reporter.log(f"{self.name}: {' and '.join(cohort_only)} apply to cohorts (sparseseg train/bench); "
                         "this job streams one run of 2D networks")
        reporter.log(f"{self.name}: theta {settings.theta:g} ({settings.threshold}), k {settings.k:g}, one run labelling alone")
        for result in loop.run(state):
            if axis:
                result.labels = {k: np.ascontiguousarray(v.transpose(inverse)) for k, v in result.labels.items()}
                result.probabilities = {k: np.ascontiguousarray(v.transpose((0,) + tuple(a + 1 for a in inverse)))
                                        for k, v in result.probabilities.items()}
                result.metrics["slice_axis"] = axis
            yield result

    def planned_rounds(self, case: Case, options: MethodOptions, state: dict | None = None) -> int:
        """Rounds a job with Rounds "auto" plans: the first model, then until every slice across the painted axis
        is labelled, then the fusion passes (:func:`~.schedule.natural_rounds`, what a cohort run does by itself).
        Before, "auto" ran the first model alone. A Continue runs the worker's rounds for new paint
        (:mod:`SparseSegLib.worker.stages`)."""
        settings = self.job_settings(options)
        _, _, work = job_frame([case])
        annotated = np.asarray(work[0].annotated if work[0].annotated is not None else np.ones(work[0].image.shape, bool))
        return natural_rounds([annotated.reshape(annotated.shape[0], -1).any(1)], settings)

    def segmenter_from_state(self, cases: list[Case], options: MethodOptions, state: dict) -> Segmenter:
        """The model a job's round state holds, on the job volume's own axes (Slicer's "Save model").

        A job trains on the volume transposed so that the painted axis comes first (:meth:`run_rounds`), and
        after a fusion round holds networks across the other two axes too: the labelling network and those
        members are rebuilt as the job built them and given the original array axes they run across.
        """
        axis, order, work = job_frame(cases)
        segmenter = self.build(work, options, self.job_settings(options))
        labelling = segmenter.network
        try:
            labelling.load_state_dict(state["network"])
            members = {}
            for member_axis, weights in ((state.get("method_state") or {}).get("members") or {}).items():
                members[int(member_axis)] = copy.deepcopy(labelling)
                members[int(member_axis)].load_state_dict(weights)
        except RuntimeError as error:
            raise SparseSegError(f"the checkpoint does not fit this job's {self.name} network "
                                 f"({str(error).splitlines()[0][:160]})",
                                 "The job's settings changed since the checkpoint was written; run the job again.") from None
        job_axes = (0, *sorted(members))
        axes = tuple(order[a] for a in job_axes)  # job axes -> the volume's own
        # a member's slices keep the job frame's in-plane order, which may be the other way round on the volume's own
        swap = tuple([order[b] for b in range(3) if b != a] != [c for c in range(3) if c != order[a]] for a in job_axes)
        config = replace(segmenter.network_config, axes=axes, swap_in_plane=swap if any(swap) else ())
        network = AxisEnsemble([labelling, *(members[a] for a in sorted(members))], axes) if members else labelling
        # the saved patch is the one across axis 0: a network across another axis sizes its own from the image
        patch = segmenter.patch_size if axes[0] == 0 else default_patch_size(cases[0].image.shape, config)
        # the job z-scored each slice across the painted axis (on the transposed volume)
        normalization = f"zscore-slice-{axis}" if axis and segmenter.normalization == "zscore-slice" else segmenter.normalization
        return replace(segmenter, network=network, network_config=config, patch_size=patch, normalization=normalization)


def painted_axis(cases: list[Case]) -> int:
    """The array axis across which the annotation lies in whole slices: the one with the fewest annotated slices."""
    annotated = cases[0].annotated
    if annotated is None or annotated.all():
        return 0
    counts = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts.append(int(np.count_nonzero(annotated.any(axis=others))))
    return int(np.argmin(counts))  # ties -> the lowest axis (0, the slice stack)


def job_frame(cases: list[Case]) -> tuple[int, tuple[int, int, int], list[Case]]:
    """The painted axis, the axis order that brings it first, and the cases transposed to that order.

    A job's 2D networks work on slices across the painted axis; training and Save model must agree on the frame.
    """
    axis = painted_axis(cases)
    order = (axis,) + tuple(a for a in range(3) if a != axis)
    return axis, order, [transpose_case(case, order) for case in cases] if axis else cases


def transpose_case(case: Case, order: tuple[int, ...]) -> Case:
    """``case`` with its arrays transposed to ``order`` (spacing follows; origin and direction are not needed)."""
    shape = tuple(case.image.shape[a] for a in order)
    spacing_kji = tuple(case.geometry.spacing_kji[a] for a in order)
    geometry = Geometry(size=tuple(reversed(shape)), spacing=tuple(reversed(spacing_kji)))
    flip = (lambda a: None if a is None else np.ascontiguousarray(a.transpose(order)))
    return replace(case, image=flip(case.image), geometry=geometry, label=flip(case.label), annotated=flip(case.annotated))
