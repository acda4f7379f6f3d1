"""What the user chooses in the Slicer module, in job terms: the offered choices and :class:`SessionSettings`.

The module's parameter node offers exactly these choices (``SparseSeg/SparseSeg.py``); the session turns the
settings into ``job.json`` parameters. No Slicer, no Qt, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..defaults import START_METHOD, start_parameters
from ..jobs.processes import default_python

#: Methods offered in the module (round-based, sparse annotation); a test checks each is registered.
METHOD_CHOICES = (START_METHOD,) + tuple(m for m in ("propagate", "gradual", "self-labelling", "sparse-only", "mean-teacher", "ua-mt",
                                                      "collaborative")
                                          if m != START_METHOD)
REGION_CHOICES = ("slices", "boxes")
ORIENTATION_CHOICES = ("auto", "axial", "coronal", "sagittal")
DEVICE_CHOICES = ("auto", "cuda", "cpu")


@dataclass
class SessionSettings:
    """What the user chose in the module (the parameter node's values, in job terms)."""

    method: str = START_METHOD
    rounds: int | None = field(default_factory=lambda: start_parameters()["rounds"])  # None: the method decides
    iterations_per_round: int | None = None
    network: str = "2d"
    budget: str = "quick"
    learning_rate: float = 1e-3
    batch_size: int | None = None
    augment: bool = False
    save_uncertainty: bool = False
    threads: int | None = None
    device: str = "auto"
    seed: int = 0
    region: str = "slices"
    orientation: str = "auto"
    python: str | None = None
    env: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
    continue_rounds: int | None = None  # None: as many as the method needs for the new paint

    def parameters(self, rounds: int | None = None) -> dict:
        """``job.json`` parameters (validated by the job schema when the job is created)."""
        parameters = {
            "rounds": _rounds(rounds if rounds is not None else self.rounds),
            "network": self.network,
            "budget": self.budget,
            "learning_rate": float(self.learning_rate),
            "augment": bool(self.augment),
            "save_uncertainty": bool(self.save_uncertainty),
        }
        for key in ("iterations_per_round", "batch_size", "threads"):
            value = getattr(self, key)
            if value:  # 0 / None: the method's or budget's default
                parameters[key] = int(value)
        if self.method_options:
            parameters["method_options"] = dict(self.method_options)
        return parameters

    def worker_python(self) -> str:
        return str(self.python) if self.python else default_python()


def _rounds(value: int | None) -> int | None:
    """A job's rounds: 0 or None (the module's "auto") leaves the count to the method."""
    return int(value) if value else None
