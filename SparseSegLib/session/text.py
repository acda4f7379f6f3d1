"""The translation hook for text the session shows in the Slicer module (status line, log, errors and hints).

``SparseSegLib`` also runs outside Slicer (tests, CLI, worker) and must not import ``slicer``, so it cannot
call Slicer's ``slicer.i18n.tr`` itself. The session files import :func:`tr` as ``_`` and pass each shown literal
through it; it is the identity until the module installs Slicer's ``translate(context, text)``
(``SparseSeg/SparseSegLogic.py``).

Why ``_`` and the caller's context: Slicer's translation tooling (``Utilities/Scripts/lupdate_preprocess.py``,
run by ``update_translations.py``) rewrites calls of ``_`` with a string literal, and only those, into
``translate`` calls with an explicit context for lupdate (this docstring avoids writing such a call out, since the
rewrite would collect it), with the context built from the file's path exactly as
``slicer.i18n.getContext`` builds it at run time: the parent folder's name + ``.`` + the file name without
``.py`` when the folder is a package (``session.session``, ``session.controller``, ...), else the file name.
:func:`tr` looks text up under that same context (:func:`context_of` the calling file), so what the tooling
extracts is what is looked up.

Rules, as for the module's ``_()`` calls: one string literal per call (never an f-string or a concatenation);
values go into ``{name}`` placeholders filled with ``.format(name=...)`` AFTER the lookup (Slicer's newer ``tr``
drops a translation whose placeholders differ from the source text's).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Callable, Optional

#: ``translator(context, text)``: Slicer's ``slicer.i18n.translate``.
Translator = Callable[[str, str], str]

_translator: Optional[Translator] = None


def set_translator(translator: Optional[Translator]) -> None:
    """Install the function that looks text up (the Slicer module does, once); None removes it."""
    global _translator
    _translator = translator


@lru_cache(maxsize=None)
def context_of(source_file: str) -> str:
    """The translation context of a source file, as ``slicer.i18n.getContext`` and lupdate_preprocess make it."""
    folder, name = os.path.split(source_file)
    stem = name[:-3] if name.endswith(".py") else name
    if os.path.isfile(os.path.join(folder, "__init__.py")):
        return f"{os.path.basename(folder)}.{stem}"
    return stem


def tr(text: str) -> str:
    """``text`` in the user's language, looked up under the calling file's context; ``text`` itself without a
    translator."""
    if _translator is None:
        return text
    return _translator(context_of(sys._getframe(1).f_code.co_filename), text)


__all__ = ["Translator", "context_of", "set_translator", "tr"]
