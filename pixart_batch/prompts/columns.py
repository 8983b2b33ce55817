"""A prompt source and its column mapping: which columns of a table hold the prompt, the id, the label
and the negative prompt (``--prompt-column``, ``--id-column``, ``--label-column``,
``--negative-prompt-column``), checked against a table's columns or a ``.jsonl`` object's keys.

The mapping only says where a field is read from: ids are derived from the values exactly as for a
file whose columns carry the default names, so the same rows give the same ids either way.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pixart_batch.errors import PromptFileError

from .fields import TABLE_COLUMNS
from .records import fail, quote

ROLES: dict[str, str] = {
    "prompt": "--prompt-column",
    "id": "--id-column",
    "label": "--label-column",
    "negative_prompt": "--negative-prompt-column",
}
"""The mapped fields, each with its flag (the keyword argument is the flag's name with ``_``)."""
PROMPT_LIKE = ("caption", "text", "captions", "prompt_text", "sentence", "description")
"""Columns that often hold the prompts of a dataset: a table without ``prompt`` that has one of them
gets a hint naming the flag."""
SHOWN_COLUMNS = 20


@dataclass(frozen=True)
class PromptSource:
    """Where prompts come from (``path``: a prompt file, a folder, ``s3://``/``gs://``, ``hf://datasets/...``)
    and which columns of a table hold the fields; the defaults are the field names."""

    path: str
    prompt_column: str = "prompt"
    id_column: str = "id"
    label_column: str = "label"
    negative_prompt_column: str = "negative_prompt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", os.fsdecode(self.path))
        seen: dict[str, str] = {}
        for field, column in self.columns().items():
            if not isinstance(column, str) or not column.strip():
                raise PromptFileError(f"{ROLES[field]}: give a column name (got {column!r})")
            if column in seen:
                both = f"{seen[column]} and {ROLES[field]}"
                raise PromptFileError(f"{both} both name the column {column!r}; give each its own column")
            seen[column] = ROLES[field]

    def columns(self) -> dict[str, str]:
        """Each mapped field → the column it is read from."""
        return {
            "prompt": self.prompt_column,
            "id": self.id_column,
            "label": self.label_column,
            "negative_prompt": self.negative_prompt_column,
        }

    def mapped(self) -> dict[str, str]:
        """The fields read from a column of another name (a flag given), → that column."""
        return {field: column for field, column in self.columns().items() if column != field}

    def column(self, field: str) -> str:
        """The column ``field`` is read from (a size column: its own name)."""
        return self.columns().get(field, field)


def as_source(value: str | os.PathLike[str] | PromptSource) -> PromptSource:
    """``value`` as a :class:`PromptSource` (a path: the default columns)."""
    return value if isinstance(value, PromptSource) else PromptSource(os.fsdecode(value))


def listing(columns: Iterable[str]) -> str:
    """The first :data:`SHOWN_COLUMNS` names, comma-separated, and how many more."""
    names = list(columns)
    shown = ", ".join(names[:SHOWN_COLUMNS]) or "none"
    return shown + (f", ... ({len(names) - SHOWN_COLUMNS} more)" if len(names) > SHOWN_COLUMNS else "")


def prompt_hint(columns: Iterable[str]) -> str:
    """``"; to read the prompts from 'caption', pass --prompt-column caption"`` for a table with a
    column that looks like prompts, else ``""``."""
    present = set(columns)
    found = next((name for name in PROMPT_LIKE if name in present), None)
    if found is None:
        return ""
    return f"; to read the prompts from {quote(found)}, pass --prompt-column {shlex.quote(found)}"


def _missing(where: str, column: str, field: str, columns: Sequence[str], kind: str = "column") -> NoReturn:
    fail(where, f"no {kind} {quote(column)} ({ROLES[field]}); {kind}s: {listing(columns)}")


def table_columns(source: PromptSource, columns: Sequence[str], where: str) -> list[tuple[str, str]]:
    """The ``(field, column)`` pairs to read from a table with ``columns`` (a CSV header, a Parquet or
    Arrow schema): the prompt column must be there, and every column a flag names; no column may be
    named twice (not even one that is ignored: which of the two was meant is not ours to guess)."""
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            fail(where, f"column {column!r} appears more than once")
        seen.add(column)
    mapped = source.mapped()
    prompt = source.prompt_column
    if prompt not in seen:
        if "prompt" in mapped:
            _missing(where, prompt, "prompt", columns)
        fail(where, f"no 'prompt' column (columns: {listing(columns)}){prompt_hint(columns)}")
    for field, column in mapped.items():
        if column not in seen:
            _missing(where, column, field, columns)
    return [(field, source.column(field)) for field in TABLE_COLUMNS if source.column(field) in seen]


class ObjectFields:
    """The fields of ``.jsonl`` objects through a mapping; a flag's key that no object holds is refused at
    the end of the file (:meth:`finish`), a missing prompt key on the line that lacks it."""

    def __init__(self, source: PromptSource) -> None:
        self.source = source
        self.pairs = [(field, source.column(field)) for field in TABLE_COLUMNS]
        self.unseen = {column: field for field, column in source.mapped().items() if field != "prompt"}
        self.first_keys: list[str] | None = None

    def fields(self, obj: dict[str, Any], where: str) -> dict[str, Any]:
        if self.first_keys is None:
            self.first_keys = list(obj)
        prompt = self.source.prompt_column
        if prompt not in obj:
            if prompt != "prompt":
                _missing(where, prompt, "prompt", list(obj), "key")
            hint = prompt_hint(obj)
            if hint:
                fail(where, f"'prompt' is missing or null (keys: {listing(obj)}){hint}")
        if self.unseen:
            for column in [column for column in self.unseen if column in obj]:
                del self.unseen[column]
        return {field: obj.get(column) for field, column in self.pairs}

    def finish(self, name: str) -> None:
        """Refuse a flag's key that no object had."""
        for column, field in self.unseen.items():
            _missing(name, column, field, self.first_keys or [], "key")


def class_names(metadata: Mapping[bytes, bytes] | None, column: str) -> list[str] | None:
    """The names of a ``datasets`` ``ClassLabel`` column, from the schema metadata ``datasets`` writes
    into Arrow and Parquet files (``b"huggingface"``); None for any other column."""
    raw = (metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][column]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(feature, dict) or feature.get("_type") != "ClassLabel":
        return None
    names = feature.get("names")
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def class_label(value: Any, names: list[str], column: str, where: str) -> str | None:
    """A ``ClassLabel`` value as its name (``-1``: no label, as ``datasets`` writes it)."""
    if value is None or value == -1:
        return None
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    fail(where, f"{quote(column)} is {value!r}, not one of the {len(names)} classes of its ClassLabel")
