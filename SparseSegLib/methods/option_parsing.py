"""Method options (``--option KEY=VALUE``, a job's ``method_options``) read into a method's settings dataclass.

Several methods keep their options as a frozen dataclass whose field defaults give each option's type; this is the
one reader for them, so every method answers an unknown key or a badly typed value the same way, before any data
loads.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

from ..errors import SparseSegError

T = TypeVar("T")


def parse_settings(cls: type[T], extra: dict | None, method: str) -> T:
    """``cls`` built from ``extra``: each value converted to its field default's type (bool, int, float, str);
    then ``check()`` when the class has one. Unknown keys and bad values raise errors that say what is allowed."""
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in (extra or {}).items():
        if key not in known:
            raise SparseSegError(f"unknown option {key!r} for method {method}", f"Known options: {', '.join(sorted(known))}.")
        default = known[key].default
        try:
            if isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            else:
                value = str(value)
        except (TypeError, ValueError):
            raise SparseSegError(f"option {key}={value!r} is not a {type(default).__name__}",
                                 f"Give a {type(default).__name__}, e.g. {key}={default}.") from None
        values[key] = value
    settings = cls(**values)
    if hasattr(settings, "check"):
        settings.check()
    return settings


def slice_axes(text: str, option: str) -> tuple[int, ...]:
    """An option listing array axes to slice across (``"0,1,2"``): distinct axes among 0, 1, 2, in the given order."""
    try:
        axes = tuple(int(a) for a in str(text).replace(" ", "").split(",") if a != "")
    except ValueError:
        axes = ()
    if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise SparseSegError(f"option {option} must list distinct axes among 0, 1, 2, not {text!r}",
                             f'E.g. {option}=0 or {option}="0,1,2".')
    return axes
