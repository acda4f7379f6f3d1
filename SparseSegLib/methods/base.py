"""What every method shares: options, budgets, the method registry and progress reporting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ..case import Case
from ..errors import SparseSegError

BUDGETS = ("quick", "paper")

#: Iterations and batch size per budget and network dimensionality. ``quick`` is for the demo, tests
#: and first looks (a minute or two on a laptop CPU); ``paper`` trains to convergence for benchmarks.
BUDGET_SCHEDULES: dict[str, dict[int, dict[str, int]]] = {
    "quick": {2: {"iterations": 300, "batch_size": 16}, 3: {"iterations": 200, "batch_size": 2}},
    "paper": {2: {"iterations": 3000, "batch_size": 16}, 3: {"iterations": 2000, "batch_size": 2}},
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

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise SparseSegError(f"unknown budget {self.budget!r}", f"Use one of: {', '.join(BUDGETS)}.")

    def schedule(self, dims: int) -> dict[str, int]:
        """Iterations and batch size for a network of ``dims``, explicit settings winning."""
        schedule = dict(BUDGET_SCHEDULES[self.budget][dims])
        if self.iterations is not None:
            schedule["iterations"] = self.iterations
        if self.batch_size is not None:
            schedule["batch_size"] = self.batch_size
        return schedule

    def to_dict(self) -> dict:
        return asdict(self)


class Reporter(Protocol):
    """Where a method tells the user what it is doing (terminal, worker events, tests)."""

    def progress(self, stage: str, step: int, total: int, loss: float, seconds_per_step: float) -> None: ...

    def log(self, message: str) -> None: ...


class SilentReporter:
    """A reporter that discards everything (library use, tests)."""

    def progress(self, stage: str, step: int, total: int, loss: float, seconds_per_step: float) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class Method(Protocol):
    """A way to turn sparsely annotated cases into a :class:`~SparseSegLib.engine.model.Segmenter`."""

    name: str
    summary: str

    def train(self, cases: list[Case], options: MethodOptions, reporter: Reporter, validation: list[Case] | None = None): ...


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
