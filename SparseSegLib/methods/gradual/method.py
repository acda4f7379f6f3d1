"""``gradual``: the registered method (worker rounds, cohort training, Save model) around :class:`GradualLoop`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from ...case import Case
from ...engine.model import Segmenter
from ...errors import SparseSegError
from ..base import MethodOptions, Reporter, RoundResult, register
from ..common import across_axis, new_segmenter
from .loop import GradualLoop
from .settings import PAPER_ROUNDS, parse_settings
from .slice_axis import painted_axis


@register("gradual")
class GradualLearning:
    summary = ("Gradual Learning (Engster et al.): grow the annotated boxes/slices by s voxels per round with "
               "confident pseudo-labels anchored at the paint; --network 3d = 3D GL, 2d = slice-stack GL")

    def check_options(self, options: MethodOptions) -> None:
        extra = {k: v for k, v in (options.extra or {}).items() if k != "rounds"}  # rounds: a cohort setting of train
        parse_settings(replace(options, extra=extra))

    def planned_rounds(self, case: Case, options: MethodOptions, state: dict | None = None) -> int:
        """Rounds a job with Rounds "auto" plans: the ``rounds`` option (the paper's R = 10 repetitions, 11 rounds),
        ending earlier once a round has trained on the whole volume (``stop_when_covered``). A Continue runs the
        worker's rounds for new paint (:mod:`SparseSegLib.worker.stages`). Before, "auto" ran round 1 alone: the
        network trained on the paint and predicted the whole volume, with no growth at all."""
        return job_rounds(options)

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
        parse_settings(options)  # bad options fail before the network is built
        segmenter = new_segmenter(cases, options, self.name)
        loop = GradualLoop(self.name, segmenter, cases, options, reporter, should_stop)
        self.loop = loop  # a run that ended once covered is not resumed with the same paint (SparseSegLib.worker.stages)
        for result in loop.run(state):
            covered = bool(result.metrics.get("covered"))
            first_covered = covered and loop.covered_at == result.index  # not a Continue after coverage
            if first_covered and loop.settings.stop_when_covered and result.index < result.total:
                reporter.log(f"{self.name}: the volume is covered after round {result.index}; stopping")
                yield replace(result, total=result.index)
                return
            yield result

    def segmenter_from_state(self, cases: list[Case], options: MethodOptions, state: dict) -> Segmenter:
        """The model a job's round state holds (Slicer's "Save model"): the job's network, across the painted axis.

        Without this a 2D network trained across array axis 1 or 2 would be saved as one running across axis 0.
        """
        segmenter = across_axis(new_segmenter(cases, options, self.name), painted_axis(cases), cases, options)
        try:
            segmenter.network.load_state_dict(state["network"])
        except RuntimeError as error:
            raise SparseSegError(f"the checkpoint does not fit a {options.network} network of this job "
                                 f"({str(error).splitlines()[0][:160]})",
                                 "The job's settings changed since the checkpoint was written; run the job again.") from None
        return segmenter

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
                              "step": self.loop.step, "slice_axis": self.loop.slice_axis,
                              "iterations_per_round": options.round_iterations(segmenter.network_config.dims),
                              "note": "validation cases are not used by gradual learning"}
        return segmenter


def job_rounds(options: MethodOptions) -> int:
    """The ``rounds`` method option (default the paper's 11) as a whole number of at least 1."""
    value = (options.extra or {}).get("rounds", PAPER_ROUNDS)
    try:
        rounds = int(value)
    except (TypeError, ValueError):
        rounds = 0
    if isinstance(value, bool) or rounds < 1 or str(rounds) != str(value).strip():
        raise SparseSegError(f"gradual option rounds={value!r} is not a whole number of at least 1",
                             f"E.g. rounds={PAPER_ROUNDS} (the paper's R = 10 repetitions).")
    return rounds
