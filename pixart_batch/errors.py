"""Errors a user can act on.

Anything raised as a :class:`UserError` is printed by the CLI as one line
(``pixart-batch: error: <message>``) with exit status 2 and no traceback.
Messages name the file and line (or key/setting) that is wrong.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, config or environment: reported as one line, exit status 2."""


class PromptFileError(UserError):
    """A prompt file that cannot be read as prompts (names the file and line)."""


class ConfigError(UserError):
    """A config that is malformed or names an unknown key."""


class CheckpointError(UserError):
    """A model checkpoint that is missing or unsafe to load."""


class OutputError(UserError):
    """An output directory that cannot be written or contradicts the run's settings."""


class SystemicFailure(Exception):
    """So many images failed that the run itself is broken: the run stops (exit status 1) with the
    most common error; committed images stay and a re-run resumes."""


def first_line(exc: BaseException, limit: int | None = 300, with_type: bool = False) -> str:
    """The first line of an exception's text (cut to ``limit`` characters; None: whole) for a one-line
    message; ``with_type`` puts the exception's class name first. The class name alone when there is no text."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type:
        return f"{type(exc).__name__}: {text}"[:limit]
    return text[:limit] if text else type(exc).__name__
