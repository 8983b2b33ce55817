"""The prompt record, and the one-line errors every part of prompt reading raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from pixart_batch.errors import PromptFileError

QUOTE_LIMIT = 60
MAX_SIDE = 2**31 - 1
"""Largest width/height accepted (sizes are stored as int32; model limits are checked later)."""


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """One prompt to render, with where it came from."""

    prompt_id: str
    """Unique in the file; only ``[A-Za-z0-9_-]`` characters."""
    prompt: str
    """Prompt text as given, size flags removed, surrounding whitespace stripped."""
    negative_prompt: str | None
    """Negative prompt; ``None`` means "use the run's default"."""
    width: int | None
    """Exact requested width in pixels (``--hw`` or a ``width`` value)."""
    height: int | None
    """Exact requested height in pixels (``--hw`` or a ``height`` value)."""
    aspect_ratio: float | None
    """Requested height/width ratio (``--ar``/``--aspect_ratio``/``aspect_ratio``)."""
    source: str
    """``FILE:LINE`` (``FILE:row N`` for parquet), for messages."""
    label: str | None = None
    """The record's class name (``label``; a class × template file's class), ``None``: unlabelled."""
    template: int | None = None
    """A class × template file's record: the index of its template in the file."""


Entry = tuple[PromptRecord, bool]
"""A record and whether its id was explicit (which the duplicate-id checks need)."""


def quote(text: str) -> str:
    """Quote user text for a message: one line, at most ~60 characters."""
    if len(text) > QUOTE_LIMIT:
        text = text[:QUOTE_LIMIT] + "..."
    return repr(text)


def fail(where: str, message: str) -> NoReturn:
    """Raise a one-line PromptFileError ``"<where>: <message>"``."""
    raise PromptFileError(" ".join(f"{where}: {message}".splitlines()))


def no_nul(text: str, what: str, source: str) -> None:
    """Refuse a NUL character in a text field (it separates the parts of a derived id's key)."""
    position = text.find("\0")
    if position >= 0:
        fail(source, f"{what} contains a NUL byte (character {position + 1}); remove it")


def digits_value(digits: str) -> int:
    """``int(digits)``, but ``MAX_SIDE + 1`` for anything longer than 10 digits.

    So a number of thousands of digits is just "too large" (``int()`` of it would
    raise Python's integer-string-conversion limit error).
    """
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 10 else MAX_SIDE + 1


def too_large(label: str, value: str, source: str) -> NoReturn:
    """Raise the error for a size above :data:`MAX_SIDE`."""
    fail(source, f"{label} is too large (got {quote(value)}); sizes are at most {MAX_SIDE} pixels per side")
