"""The one exception type the CLI turns into a one-line message and a non-zero exit code."""
from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A problem the user can fix (bad preset, missing data, corrupt checkpoint, ...).

    The message is one line that says what is wrong and what to do; ``exit_code`` is 2 for
    invalid input and 1 for a run that failed."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text, limit: int | None = None) -> str:
    """``text`` (an exception's message, ...) on one line, its whitespace collapsed, cut at ``limit``."""
    return " ".join(str(text).split())[:limit]


def os_error_text(e: OSError) -> str:
    """"no space left on device", "permission denied", ...: the errno's text, lower case."""
    if e.errno == errno.ENOSPC:
        return "no space left on device"
    text = e.strerror or (os.strerror(e.errno) if e.errno else str(e)) or type(e).__name__
    return text[:1].lower() + text[1:]
