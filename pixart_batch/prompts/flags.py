"""The ``--ar``/``--aspect_ratio``/``--hw`` size flags at the end of a prompt line."""

from __future__ import annotations

import math
import re

from .records import MAX_SIDE, digits_value, fail, no_nul, quote, too_large

_FLAG_RE = re.compile(r"(?<!\S)--(?:ar|aspect_ratio|hw)(?!\S)")
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_RATIO_RE = re.compile(rf"({_NUMBER}):({_NUMBER})")
_SIZE_RE = re.compile(r"([0-9]+):([0-9]+)")


def parse_ratio(value: str, label: str, source: str) -> float:
    """Parse an ``h:w`` aspect ratio of positive numbers into height/width."""
    match = _RATIO_RE.fullmatch(value.strip())
    if match:
        height, width = float(match[1]), float(match[2])
        if height > 0 and width > 0 and 0 < height / width < math.inf:
            return height / width
    fail(source, f"{label} needs two positive numbers h:w (got {quote(value)})")


def _parse_size(value: str, label: str, source: str) -> tuple[int, int]:
    """Parse an ``h:w`` size of positive integers (at most ``MAX_SIDE``) into (width, height)."""
    match = _SIZE_RE.fullmatch(value)
    if match:
        height, width = digits_value(match[1]), digits_value(match[2])
        if height > 0 and width > 0:
            if max(height, width) > MAX_SIDE:
                too_large(label, value, source)
            return width, height
    fail(source, f"{label} needs two positive integers h:w in pixels (got {quote(value)})")


def parse_prompt_line(text: str, source: str) -> tuple[str, int | None, int | None, float | None]:
    """Split one prompt line into ``(prompt, width, height, aspect_ratio)``.

    Size flags (``--ar h:w``, ``--aspect_ratio h:w``, ``--hw h:w``) are
    recognised as whitespace-separated tokens and must end the line; they and
    the whitespace around them are removed, everything before them (e.g. a
    trailing comma) stays.  ``--`` anywhere else in the text is ordinary text.

    Raises:
        PromptFileError: ``"<source>: ..."`` for a malformed, repeated or
            conflicting flag, a size above 2147483647, text after the flags,
            empty prompt text, or a NUL character.
    """
    no_nul(text, "prompt text", source)
    text = text.strip()
    match = _FLAG_RE.search(text) if "--" in text else None
    if match is None:
        if not text:
            fail(source, "prompt text is empty")
        return text, None, None, None

    prompt = text[: match.start()].rstrip()
    tokens = text[match.start() :].split()
    width = height = ratio = None
    ratio_flag = ""
    for i in range(0, len(tokens), 2):
        flag = tokens[i]
        if flag not in ("--ar", "--aspect_ratio", "--hw"):
            fail(
                source,
                f"unexpected {quote(flag)} after a size flag: size flags must be at the end of "
                "the line (only --ar, --aspect_ratio and --hw are recognised)",
            )
        if i + 1 == len(tokens):
            fail(source, f"{flag} needs a value h:w")
        if flag == "--hw":
            if width is not None:
                fail(source, "more than one --hw flag")
            width, height = _parse_size(tokens[i + 1], flag, source)
        else:
            if ratio is not None:
                fail(source, f"more than one aspect ratio flag ({ratio_flag} and {flag})")
            ratio, ratio_flag = parse_ratio(tokens[i + 1], flag, source), flag
    if ratio is not None and width is not None:
        fail(source, f"both {ratio_flag} and --hw given; use one (aspect ratio or exact size)")
    if not prompt:
        fail(source, "prompt text is empty (only size flags)")
    return prompt, width, height, ratio
