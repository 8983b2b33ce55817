"""Stable prompt ids: derived content ids (two-pass duplicate numbering), explicit ids, duplicate errors."""

from __future__ import annotations

import hashlib
import re
from array import array
from typing import Any, NoReturn

from .records import PromptRecord, fail, no_nul, quote

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


class IdMaker:
    """Derives content ids: ``p<16 hex>`` of the key's sha256, ``-N`` for its N-th repeat.

    Numbering repeats needs to know which keys repeat. A first pass (``repeated=None``)
    only records each key's 64-bit digest (8 bytes per prompt, in a compact array); the
    second pass is given the digests that occur more than once and counts just those, so
    memory does not hold a dict entry per prompt.
    """

    def __init__(self, repeated: frozenset[int] | None = None) -> None:
        self.repeated = repeated
        self.digests = array("Q")
        self._counts: dict[int, int] = {}

    def derive(self, key: bytes) -> str:
        digest = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
        if self.repeated is None:
            self.digests.append(digest)
            return f"p{digest:016x}"
        if digest not in self.repeated:
            return f"p{digest:016x}"
        count = self._counts.get(digest, 0)
        self._counts[digest] = count + 1
        return f"p{digest:016x}" if count == 0 else f"p{digest:016x}-{count}"


DERIVED_ID_RE = re.compile(r"p([0-9a-f]{16})(?:-([1-9][0-9]*))?")


def id_digest(prompt_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(prompt_id.encode(), digest_size=8).digest(), "big")


def explicit_id(value: Any, source: str, column: str = "id") -> str:
    """Validate an explicit id (text, or a JSON/table integer turned into text) read from ``column``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        fail(source, f"'{column}' must be a string or an integer, not {type(value).__name__}")
    no_nul(value, f"'{column}'", source)
    if not _ID_RE.fullmatch(value):
        fail(
            source,
            f"id {quote(value)} is not allowed: ids are 1-128 characters from A-Z a-z 0-9 _ - "
            "(they become output keys)",
        )
    return value


def duplicate_id(
    name: str, record: PromptRecord, explicit: bool, earlier: PromptRecord, earlier_explicit: bool
) -> NoReturn:
    """Raise the error for ``record`` reusing the id of the ``earlier`` one."""

    def where(r: PromptRecord) -> str:
        if not r.source.startswith(name + ":"):
            return r.source  # a record of one file of a folder: "FOLDER/FILE:row N"
        location = r.source[len(name) + 1 :]  # "N" (a line) or "row N"
        return location if location.startswith("row ") else f"line {location}"

    if explicit == earlier_explicit:
        problem = f"duplicate id {quote(record.prompt_id)} (first at {where(earlier)})"
    else:
        derived, given = (earlier, record) if explicit else (record, earlier)
        problem = (
            f"id {quote(record.prompt_id)} derived from the text at {where(derived)} equals the "
            f"explicit id at {where(given)}; give the row at {where(derived)} an explicit id"
        )
    fail(record.source, problem)
