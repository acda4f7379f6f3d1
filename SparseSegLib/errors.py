"""User-facing errors.

Every failure a user can fix (wrong file, bad annotation, unknown method, ...) is raised as a
:class:`SparseSegError` carrying a message *and* a hint saying what to do. The command line prints
them on one line without a traceback; the worker turns them into ``error`` events; the Slicer module
shows them in a message box. Anything else that escapes is a bug.
"""

from __future__ import annotations


class SparseSegError(Exception):
    """An error the user can act on: ``message`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint joined on a single line, as the CLI prints it."""
        text = self.message.rstrip(".")
        return f"{text}. {self.hint}" if self.hint else text
