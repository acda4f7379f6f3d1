"""The gradual method's options (``options.extra``): defaults, allowed values, one validation.

Kept apart from the loop so that ``check_options`` (run before any data loads) and the loop read the same
rules, and so that the option list in the package doc has one place to match.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base import MethodOptions
from ...errors import SparseSegError

#: The paper's 10 GL repetitions after the initial training on ground truth.
PAPER_ROUNDS = 11

#: Pseudo-labels below this top softmax probability stay unknown (the project's self-labelling theta; its
#: paper found 0.6-0.8 best). A hard argmax over the whole grown slab taught the network its own far blobs.
DEFAULT_CONFIDENCE = 0.7

DEFAULTS = {
    "step": "auto",
    "grow_axes": None,  # by network: "all" for 3D, "slice" for 2D
    "relabel": "repredict",
    "confidence": DEFAULT_CONFIDENCE,
    "anchor": True,
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
#: Values of ``confidence`` that switch the gate off (hard argmax, the paper's reading).
NO_CONFIDENCE = (None, "none", "off", "null")


@dataclass(frozen=True)
class GradualSettings:
    """The method options after validation (see the package doc)."""

    step: int | str
    grow_axes: str
    relabel: str
    confidence: float | None
    anchor: bool
    restart: bool
    predict: str
    crops: str
    stop_when_covered: bool

    def to_dict(self) -> dict:
        return {"step": self.step, "grow_axes": self.grow_axes, "relabel": self.relabel, "confidence": self.confidence,
                "anchor": self.anchor, "restart": self.restart, "predict": self.predict, "crops": self.crops,
                "stop_when_covered": self.stop_when_covered}


def _as_bool(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise SparseSegError(f"gradual option {key}={value!r} is not true or false", f"Use {key}=true or {key}=false.")


def _confidence(value) -> float | None:
    """``confidence`` as a threshold in (0, 1), or None for no gate (``none``/``off``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_CONFIDENCE):
        return None
    if isinstance(value, bool):  # json true/false would otherwise read as 1.0/0.0
        raise SparseSegError(f"gradual option confidence={value!r} is not a number",
                             f"E.g. confidence={DEFAULT_CONFIDENCE}, or confidence=none for no gate.")
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise SparseSegError(f"gradual option confidence={value!r} is not a number",
                             f"E.g. confidence={DEFAULT_CONFIDENCE}, or confidence=none for no gate.") from None
    if not 0.0 < threshold < 1.0:
        raise SparseSegError(f"gradual option confidence={threshold} is outside (0, 1)",
                             f"E.g. confidence={DEFAULT_CONFIDENCE}, or confidence=none for no gate.")
    return threshold


def parse_settings(options: MethodOptions) -> GradualSettings:
    """Validate ``options.extra`` against :data:`DEFAULTS`; unknown keys and bad values are one-line errors."""
    extra = dict(options.extra or {})
    unknown = sorted(set(extra) - set(DEFAULTS))
    if unknown:
        raise SparseSegError(f"unknown gradual option(s): {', '.join(unknown)}", f"Known options: {', '.join(DEFAULTS)}.")
    # an explicit None means "no gate" for confidence; for every other key it means "the default"
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
    return GradualSettings(step=step, grow_axes=values["grow_axes"], relabel=values["relabel"],
                           confidence=_confidence(values["confidence"]), anchor=_as_bool("anchor", values["anchor"]),
                           restart=_as_bool("restart", values["restart"]), predict=values["predict"], crops=values["crops"],
                           stop_when_covered=_as_bool("stop_when_covered", values["stop_when_covered"]))
