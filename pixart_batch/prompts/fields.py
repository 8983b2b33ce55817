"""Validation of the fields of a ``.jsonl`` object or table row into a record."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from pixart_batch.errors import a_or_an

from .flags import parse_prompt_line, parse_ratio
from .ids import IdMaker, explicit_id
from .records import MAX_SIDE, Entry, PromptRecord, digits_value, fail, no_nul, quote, too_large

TABLE_COLUMNS = ("prompt", "id", "negative_prompt", "width", "height", "aspect_ratio", "label")
"""The columns (and ``.jsonl`` keys) a row may carry; others are ignored."""
_INT_TEXT_RE = re.compile(r"\s*([0-9]+)(?:\.0*)?\s*")


def _positive_int(value: Any, key: str, source: str) -> int:
    """Convert a width/height value (int, integral float or digit text) to an int in 1..2**31-1."""
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and (match := _INT_TEXT_RE.fullmatch(value)):
        number = digits_value(match[1])
    if number is None or number <= 0:
        shown = str(value) if isinstance(value, (str, int, float)) else a_or_an(type(value).__name__)
        fail(source, f"'{key}' must be a positive integer (got {quote(shown)})")
    if number > MAX_SIDE:
        too_large(f"'{key}'", str(value), source)
    return number


def record_from_fields(
    fields: dict[str, Any],
    source: str,
    ids: IdMaker,
    names: Mapping[str, str] | None = None,
) -> Entry:
    """Build a record from a jsonl object or table row (``None`` values = not given); ``names``: the
    column each field was read from, for messages (``--prompt-column`` and the like; default: the field's).

    Returns the record and whether its id was explicit.
    """
    named = names or {}
    prompt_name = f"'{named.get('prompt', 'prompt')}'"
    negative_name = f"'{named.get('negative_prompt', 'negative_prompt')}'"
    raw_prompt = fields.get("prompt")
    if raw_prompt is None:
        fail(source, f"{prompt_name} is missing or null")
    if not isinstance(raw_prompt, str):
        fail(source, f"{prompt_name} must be a string, not {type(raw_prompt).__name__}")
    no_nul(raw_prompt, prompt_name, source)
    prompt, width, height, ratio = parse_prompt_line(raw_prompt, source)
    key = raw_prompt.strip()

    raw_width, raw_height = fields.get("width"), fields.get("height")
    if (raw_width is None) != (raw_height is None):
        given, missing = ("width", "height") if raw_height is None else ("height", "width")
        fail(source, f"'{given}' given without '{missing}'; give both or neither")
    if raw_width is not None:
        if width is not None or ratio is not None:
            fail(source, "size given twice: as a flag in the prompt and as 'width'/'height'")
        width = _positive_int(raw_width, "width", source)
        height = _positive_int(raw_height, "height", source)
        key += f" --hw {height}:{width}"

    raw_ratio = fields.get("aspect_ratio")
    if raw_ratio is not None:
        if width is not None or ratio is not None:
            fail(source, "size given twice: 'aspect_ratio' together with a size flag or 'width'/'height'")
        if not isinstance(raw_ratio, str):
            fail(source, f"'aspect_ratio' must be a string 'h:w', not {type(raw_ratio).__name__}")
        ratio = parse_ratio(raw_ratio, "'aspect_ratio'", source)
        key += f" --ar {raw_ratio.strip()}"

    negative = fields.get("negative_prompt")
    if negative is not None:
        if not isinstance(negative, str):
            fail(source, f"{negative_name} must be a string, not {type(negative).__name__}")
        no_nul(negative, negative_name, source)
        negative = negative.strip()
        key += "\0" + negative

    label = label_of(fields.get("label"), source, named.get("label", "label"))
    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError:
        fail(source, "text contains an unpaired surrogate escape (e.g. \\ud800); not valid Unicode")
    raw_id = fields.get("id")
    explicit = raw_id is not None
    prompt_id = explicit_id(raw_id, source, named.get("id", "id")) if explicit else ids.derive(key_bytes)
    return PromptRecord(prompt_id, prompt, negative, width, height, ratio, source, label), explicit


MAX_LABEL_CHARS = 256
_JOINERS = frozenset("\u200c\u200d")
"""Zero-width (non-)joiners: format characters that spell words (Persian, Indic scripts) and emoji."""


def normal_label(name: str) -> str:
    """A class name as classes are compared: Unicode NFC, so "café" typed either way is one class."""
    return unicodedata.normalize("NFC", name)


def _unseen_character(text: str) -> tuple[int, str] | None:
    """The first character (1-based position, ``U+XXXX``) a class name may not hold: a control
    character (``Cc``: newline, tab, ...), an invisible format character (``Cf``: zero-width space,
    bidirectional overrides, ...; the joiners aside), a line or paragraph separator, or a surrogate."""
    for position, char in enumerate(text, 1):
        if char in _JOINERS:
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            return position, f"U+{ord(char):04X}"
    return None


def label_of(value: Any, source: str, column: str = "label") -> str | None:
    """A record's ``label``: a class name (non-empty text, surrounding whitespace stripped, Unicode
    NFC), or ``None``. Control and invisible format characters inside it are refused (a class name is
    one line of visible text: it heads tables and directory listings).

    The label is not part of a derived id: labelling a prompt file does not change its ids (its images).
    ``column``: the column (or key) it was read from, for messages."""
    name = f"'{column}'"
    if value is None:
        return None
    if not isinstance(value, str):
        fail(source, f"{name} must be a string (a class name), not {type(value).__name__}")
    no_nul(value, name, source)
    label = value.strip()
    if not label:
        fail(source, f"{name} is empty; give a class name or leave the field out")
    unseen = _unseen_character(label)
    if unseen is not None:
        position, code = unseen
        fail(
            source,
            f"{name} {quote(label)} holds a control or invisible character ({code}, character {position}); "
            "a class name is one line of visible text",
        )
    label = normal_label(label)
    if len(label) > MAX_LABEL_CHARS:
        fail(source, f"{name} is longer than {MAX_LABEL_CHARS} characters ({quote(label)})")
    return label
