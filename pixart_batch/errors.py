"""Errors a user can act on.

Anything raised as a :class:`UserError` is printed by the CLI as one line
(``pixart-batch: error: <message>``) with exit status 2 and no traceback.
Messages name the file and line (or key/setting) that is wrong.

:class:`UserError` (also ``pixart_batch.UserError`` and its alias ``pixart_batch.PixartBatchError``) is the
one exception class a caller of the Python API (:mod:`pixart_batch.api`) catches: every bad input,
config, checkpoint or output raises it (or a subclass below), and ``str(exc)`` is the CLI's message.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, config or environment: reported as one line, exit status 2. The documented public
    exception of the Python API (``pixart_batch.UserError``); its message is the CLI's line."""


PixartBatchError = UserError
"""Another name of :class:`UserError` (``pixart_batch.PixartBatchError``)."""


class PromptFileError(UserError):
    """A prompt file that cannot be read as prompts (names the file and line)."""


class ConfigError(UserError):
    """A config that is malformed or names an unknown key."""


class CheckpointError(UserError):
    """A model checkpoint that is missing or unsafe to load."""


class HubUnavailableError(CheckpointError):
    """A hub checkpoint that could not be fetched (offline, unreachable, or not on the hub)."""


class OutputError(UserError):
    """An output directory that cannot be written or contradicts the run's settings."""


class ExpressionError(UserError):
    """A ``--where`` expression that does not parse or does not fit the output's columns (names the
    column or the position)."""


class SystemicFailure(Exception):
    """So many images failed that the run itself is broken: the run stops (exit status 1) with the
    most common error; committed images stay and a re-run resumes."""


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, for a type or kind named in a message: ``an int``,
    ``a float``, ``an object``, ``a list``."""
    return f"{'an' if word[:1].lower() in 'aeiou' and word[:1] else 'a'} {word}"


ELLIPSIS = "…"


def shorten(text: str, limit: int | None) -> str:
    """``text`` cut to at most ``limit`` characters (None: whole), ending in ``…`` when cut.

    The cut lands between words: the word it would split is left out whole, so a URL, a host name
    or a path is never shown half (``…host 'bucket.s3.amazo…`` would name another host). Only a
    first word longer than ``limit`` is cut inside."""
    if limit is None or len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return text[:limit]
    kept = text[: limit - len(ELLIPSIS) + 1]  # one character more: is the last kept word whole?
    if not kept[-1].isspace():
        kept = kept[:-1]
        space = max(kept.rfind(" "), kept.rfind("\t"))
        if space > 0:
            kept = kept[:space]
    return kept.rstrip(" \t,;:") + ELLIPSIS


def one_line(text: str) -> str:
    """``text`` as one line: its first non-empty line (Arrow's and tarfile's messages run over several)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def first_line(exc: BaseException, limit: int | None = 300, with_type: bool = False) -> str:
    """The first line of an exception's text for a one-line message, cut to ``limit`` characters
    between words (:func:`shorten`; None: whole); ``with_type`` puts the exception's class name first.
    The class name alone when there is no text."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type:
        return shorten(f"{type(exc).__name__}: {text}", limit)
    return shorten(text, limit) if text else type(exc).__name__
