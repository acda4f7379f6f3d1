"""The translation hook for text the session shows in the Slicer module (status line, log, errors and hints).

``SparseSegLib`` also runs outside Slicer (tests, CLI, worker) and must not import ``slicer``, so it cannot
call Slicer's ``slicer.i18n.tr`` itself. Instead the session wraps each shown literal in :func:`tr`, which
is the identity until the module installs Slicer's translation (``SparseSeg/SparseSegLogic.py``:
``set_translator(lambda text: translate("SparseSeg", text))``; the context is ``SparseSeg``, see
docs/slicer-api.md).

Rules, as for the module's ``_()`` calls: Qt's lupdate collects only a literal argument, and the lookup is
by the exact source text, so every call is ``tr("...")`` with one string literal (never an f-string or a
concatenation); values go into ``{name}`` placeholders filled with ``.format(name=...)`` AFTER the lookup
(Slicer's newer ``tr`` drops a translation whose placeholders differ from the source text's).
"""

from __future__ import annotations

from typing import Callable, Optional

Translator = Callable[[str], str]

_translator: Optional[Translator] = None


def set_translator(translator: Optional[Translator]) -> None:
    """Install the function that looks text up (the Slicer module does, once); None removes it."""
    global _translator
    _translator = translator


def tr(text: str) -> str:
    """``text`` in the user's language: the installed translator's answer, or ``text`` itself without one."""
    return text if _translator is None else _translator(text)


__all__ = ["Translator", "set_translator", "tr"]
