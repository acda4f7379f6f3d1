"""What every method shares: options, budgets, the method registry and progress reporting."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ..case import Case
from ..errors import SparseSegError

BUDGETS = ("quick", "paper")

#: Iterations and batch size per budget and network dimensionality. ``quick`` is for the demo, tests
#: and first looks (a minute or two on a laptop CPU); ``paper`` is for benchmarks: long enough for the
#: validation Dice to level off on hippocampus-sized data (the best validation checkpoint is kept).
BUDGET_SCHEDULES: dict[str, dict[int, dict[str, int]]] = {
    "quick": {2: {"iterations": 300, "batch_size": 16}, 3: {"iterations": 200, "batch_size": 2}},
    "paper": {2: {"iterations": 1500, "batch_size": 16}, 3: {"iterations": 1000, "batch_size": 2}},
}


@dataclass
class MethodOptions:
    """Settings common to all methods; ``None`` means the method's or budget's default."""

    network: str = "2d"
    budget: str = "quick"
    device: str = "auto"
    seed: int = 0
    iterations: int | None = None
    batch_size: int | None = None
    learning_rate: float = 1e-3
    patch_size: tuple[int, ...] | None = None
    normalization: str = "zscore"
    augment: bool = False
    validate_every: int = 0
    extra: dict = field(default_factory=dict)
    #: Round-based runs (see :class:`RoundMethod`): how many rounds, and training iterations per round
    #: (None: the schedule's iterations spread over the rounds, so the total budget does not change).
    rounds: int | None = 1  # None: the method decides (a worker job whose parameters.rounds is null)
    iterations_per_round: int | None = None

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise SparseSegError(f"unknown budget {self.budget!r}", f"Use one of: {', '.join(BUDGETS)}.")
        if self.rounds is not None and int(self.rounds) < 1:
            raise SparseSegError(f"rounds must be at least 1, not {self.rounds}", "Use rounds >= 1.")
        if self.iterations_per_round is not None and int(self.iterations_per_round) < 1:
            raise SparseSegError(f"iterations per round must be at least 1, not {self.iterations_per_round}",
                                 "Use iterations_per_round >= 1.")

    def schedule(self, dims: int) -> dict[str, int]:
        """Iterations and batch size for a network of ``dims``, explicit settings winning."""
        schedule = dict(BUDGET_SCHEDULES[self.budget][dims])
        if self.iterations is not None:
            schedule["iterations"] = self.iterations
        if self.batch_size is not None:
            schedule["batch_size"] = self.batch_size
        return schedule

    def round_iterations(self, dims: int) -> int:
        """Training iterations of one round: explicit, else the schedule's total split over the rounds."""
        if self.iterations_per_round is not None:
            return int(self.iterations_per_round)
        return max(1, math.ceil(self.schedule(dims)["iterations"] / int(self.rounds or 1)))

    def to_dict(self) -> dict:
        return asdict(self)


class Reporter(Protocol):
    """Where a method tells the user what it is doing (terminal, worker events, tests)."""

    def progress(self, stage: str, step: int, total: int, loss: float | None, seconds_per_step: float) -> None:
        """Step ``step`` of ``total`` of ``stage``; ``loss`` is None where a stage has none (registration)."""

    def log(self, message: str) -> None: ...

    def warning(self, message: str, hint: str) -> None:
        """Something the user should act on (``hint`` says how); training goes on."""


class SilentReporter:
    """A reporter that discards everything (library use, tests)."""

    def progress(self, stage: str, step: int, total: int, loss: float | None, seconds_per_step: float) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def warning(self, message: str, hint: str) -> None:
        pass


class PartReporter:
    """``reporter`` for part ``part`` (from 0) of ``parts`` equal parts of one stage (the networks of an axis
    ensemble, trained one after the other): each part's steps count on from the parts before, so a progress bar
    over the stage only moves forward and its ETA covers the parts still to come, not just the current one."""

    def __init__(self, reporter: Reporter, part: int, parts: int) -> None:
        self.reporter, self.part, self.parts = reporter, int(part), max(1, int(parts))

    def progress(self, stage: str, step: int, total: int, loss: float | None, seconds_per_step: float) -> None:
        self.reporter.progress(stage, self.part * total + step, self.parts * total, loss, seconds_per_step)

    def log(self, message: str) -> None:
        self.reporter.log(message)

    def warning(self, message: str, hint: str) -> None:
        self.reporter.warning(message, hint)


class Method(Protocol):
    """A way to turn sparsely annotated cases into a :class:`~SparseSegLib.engine.model.Segmenter`.

    Optional: ``segmenter_from_state(cases, options, state)`` rebuilds the model a job's round state holds, for a
    method whose network is not the job's preset (Save model, :mod:`~SparseSegLib.worker.model_export`);
    ``trained_network(options)`` (``"2d"`` / ``"3d"``) for a method whose network does not follow ``--networks``,
    so reports label a run by the network it trained; ``memory_settings(options)`` -> ``(batch, patch or None[,
    multiple])`` for a method whose batch is its own rather than the budget's, so that the worker's out-of-memory retry halves
    what it really trains with (:func:`~SparseSegLib.worker.memory.reduce_memory`).
    """

    name: str
    summary: str

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None): ...

    def check_options(self, options: MethodOptions) -> None:
        """Raise :class:`SparseSegError` for method options it does not know or accept (before any data loads)."""


# --------------------------------------------------------------------------------------------------
# Round API: methods that stream a result after every round (the worker's unit of progress)


@dataclass
class RoundResult:
    """What a method hands over after each round: a full-volume result per case and resumable state.

    ``index`` is 1-based and ``total`` the number of rounds planned. ``labels`` maps case id to a
    uint8 label map ``(k, j, i)``; ``probabilities`` (optional) to class probabilities ``(C, k, j, i)``
    and ``uncertainty`` (optional) to a ``(k, j, i)`` map in [0, 1]. ``metrics`` holds the method's own
    JSON-ready figures for the round (loss, iterations, pseudo-labelled voxels, ...); scores against a
    reference are the caller's business. ``state`` is everything needed to continue after this round
    (see :class:`RoundMethod`): a snapshot, not live tensors, since training goes on in place.
    """

    index: int
    total: int
    labels: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    uncertainty: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    state: dict | None = None


class RoundMethod(Protocol):
    """A method that trains in rounds and yields a :class:`RoundResult` after each one.

    ``run_rounds(cases, options, reporter, state=None, should_stop=None)`` runs rounds
    ``state["round"] + 1 .. options.rounds`` (all of them when ``state`` is None) and yields one result
    per round. ``state`` is what an earlier result carried: a dict of tensors and plain data (str, int,
    float, bool, None, lists, dicts) that the worker stores with ``torch.save`` and reads back with
    ``torch.load(weights_only=True)``, so no pickled code is ever run. It holds at least
    ``{"format", "method", "round", "network"}`` (the state dict) and whatever else the method needs
    to continue exactly where it stopped (sampler RNG, pseudo-labels, schedules, ...).
    ``should_stop()`` is polled between training steps; when it returns True the method raises
    :class:`~SparseSegLib.engine.trainer.TrainingCancelled` (``train_network`` does this) and the
    caller keeps the rounds already yielded.

    The shared loop is :class:`~SparseSegLib.methods.common.RoundLoop`: gradual and self-labelling
    methods subclass it and override ``training_volumes`` (new targets per round, e.g. pseudo-labels
    from the previous round's prediction), ``method_state`` / ``load_method_state`` (their own
    resumable state) and ``round_metrics``.
    """

    name: str

    def run_rounds(self, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]: ...


def iter_rounds(method: Method, cases: list[Case], options: MethodOptions, reporter: Reporter, state: dict | None = None,
                should_stop: Callable[[], bool] | None = None) -> Iterator[RoundResult]:
    """Run any method round by round: its own ``run_rounds`` or, lacking one, one round of ``train``.

    A method without ``run_rounds`` runs as a single round (train, then predict every case); it
    cannot be cancelled mid-training, only before it starts.
    """
    if hasattr(method, "run_rounds"):
        yield from method.run_rounds(cases, options, reporter, state=state, should_stop=should_stop)
        return
    if int(options.rounds or 1) != 1:
        raise SparseSegError(f"method {method.name!r} does not run in rounds", "Run it with rounds 1.")
    if state is not None and int(state.get("round", 0)) >= 1:
        return
    if should_stop is not None and should_stop():
        from ..engine.trainer import TrainingCancelled

        raise TrainingCancelled()
    from ..engine.device import select_device

    segmenter = method.train(cases, options, reporter)
    device = select_device(options.device)
    labels, probabilities = {}, {}
    for case in cases:
        labels[case.case_id], probabilities[case.case_id] = segmenter.predict(case.image, device)
    network = {k: v.detach().cpu().clone() for k, v in segmenter.network.state_dict().items()}
    yield RoundResult(index=1, total=1, labels=labels, probabilities=probabilities,
                      metrics=dict(segmenter.training or {}),
                      state={"format": 1, "method": method.name, "round": 1, "network": network})


def planned_rounds(method: Method, case: Case, options: MethodOptions, state: dict | None = None) -> int:
    """Rounds a job runs: the options' count, or when that is None (the job leaves it to the method) the
    method's own plan (``planned_rounds(case, options, state)``: e.g. until every slice is labelled), else 1."""
    if options.rounds is not None:
        return int(options.rounds)
    if hasattr(method, "planned_rounds"):
        return int(method.planned_rounds(case, options, state))
    return 1


METHODS: dict[str, Callable[[], Method]] = {}


def register(name: str) -> Callable:
    """Class decorator adding a method to :data:`METHODS` under ``name``."""

    def decorate(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name lists the known ones."""
    if name not in METHODS:
        raise SparseSegError(f"unknown method {name!r}", f"Known methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name]()
