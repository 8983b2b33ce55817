"""Streaming passes over a prompt file: the validating scan (bounded memory), then the records."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from .classes import ClassFile, count_class_file
from .columns import PromptSource, as_source
from .folders import read_source
from .ids import DERIVED_ID_RE, IdMaker, duplicate_id, id_digest
from .readers import CLASS_EXTENSIONS, suffix
from .records import Entry, PromptRecord, fail
from .source import PromptFingerprint, Tally

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PromptScan:
    """What a first, validating pass over a prompt file learned (see :func:`scan_prompts`)."""

    path: str
    count: int
    """Prompts in the file."""
    repeated: frozenset[int]
    """Content digests of lines/rows without an explicit id that occur more than once."""
    fingerprint: PromptFingerprint | None = None
    """The bytes the scan read; :func:`iter_prompts` refuses a file that no longer has them
    (``None``: not checked)."""
    largest_side: tuple[int, str] | None = None
    """The largest requested width or height (``--hw`` / width / height) and where it is, so sizes
    beyond the model's limit are refused before anything starts (``None``: no size requested)."""
    labels: tuple[str, ...] = ()
    """The distinct labels of the records, sorted (empty: an unlabelled file)."""
    source: PromptSource | None = None
    """What was scanned: the path and the columns a table's fields are read from (None: ``path``, the
    default columns). :func:`iter_prompts` given this scan reads the same way."""


Prompts = str | os.PathLike[str] | PromptSource
"""A prompt source: a path (a file, folder, glob or URI; the default columns) or a :class:`PromptSource`."""


def scan_prompts(path: Prompts) -> PromptScan:
    """Validate every prompt of ``path`` (a path, or a :class:`PromptSource` with its column mapping) and
    check that ids are unique, in bounded memory.

    Streams the file once, keeping 8 bytes per prompt (content digests and explicit-id
    digests in compact arrays) instead of the prompts themselves; a duplicate is then
    located by a second, targeted pass so the error can name both lines. The scan's
    ``fingerprint`` says which bytes were validated.

    Raises:
        PromptFileError: for anything that makes the file unusable (including a path that
            is not a regular file), or an id that occurs twice (an explicit id repeated,
            or a derived id equal to an explicit one).
    """
    import numpy as np

    source = as_source(path)
    name = source.path
    tally = Tally(name)
    ids = IdMaker()
    explicit = array("Q")
    lookalikes: list[str] = []  # explicit ids shaped like derived ones (could collide)
    count = 0
    largest: tuple[int, str] | None = None
    labels = _Labels(name)
    for record, is_explicit in read_source(source, ids, tally):
        count += 1
        labels.add(record)
        side = max(record.width or 0, record.height or 0)
        if side and (largest is None or side > largest[0]):
            largest = (side, record.source)
        if is_explicit:
            explicit.append(id_digest(record.prompt_id))
            if DERIVED_ID_RE.fullmatch(record.prompt_id):
                lookalikes.append(record.prompt_id)
    digests = np.frombuffer(ids.digests, dtype=np.uint64) if len(ids.digests) else np.zeros(0, np.uint64)
    values, counts = np.unique(digests, return_counts=True)
    repeated = frozenset(int(v) for v in values[counts > 1])
    clash = bool(lookalikes) and _derived_clash(lookalikes, values, counts)
    explicit_counts = (
        np.unique(np.frombuffer(explicit, dtype=np.uint64), return_counts=True)[1] if len(explicit) else None
    )
    if clash or (explicit_counts is not None and (explicit_counts > 1).any()):
        _raise_duplicate(source, repeated, tally.fingerprint())
    names = tuple(sorted(labels.names))
    return PromptScan(name, count, repeated, tally.fingerprint(), largest, names, source)


def count_records(path: Prompts) -> ClassFile | None:
    """A class × template file parsed and its records counted, none made (its ``describe()`` says how
    many), and refused above its limit; ``None`` for a file whose records are only known by reading them."""
    name = as_source(path).path
    if suffix(name) not in CLASS_EXTENSIONS:
        return None
    parsed = count_class_file(name)
    parsed.check_size()
    return parsed


MAX_LABELS = 100_000
"""Distinct labels a prompt file may have (the scan holds them; the settings and the card list them)."""


class _Labels:
    """The distinct labels of a scan; refuses a file that labels some records and not others."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.names: set[str] = set()
        self.first_labelled: str | None = None
        self.first_unlabelled: str | None = None

    def add(self, record: PromptRecord) -> None:
        if record.label is None:
            if self.first_unlabelled is None:
                self.first_unlabelled = record.source
        else:
            if self.first_labelled is None:
                self.first_labelled = record.source
            if record.label not in self.names:
                if len(self.names) >= MAX_LABELS:
                    fail(
                        record.source,
                        f"more than {MAX_LABELS:,} distinct labels; an output has at most that many classes",
                    )
                self.names.add(record.label)
        if self.first_labelled is not None and self.first_unlabelled is not None:
            fail(
                self.first_unlabelled,
                f"no 'label', but other records have one (first at {self.first_labelled}); "
                "label every record or none",
            )


def _derived_clash(lookalikes: list[str], values: np.ndarray, counts: np.ndarray) -> bool:
    """Whether an explicit id equals an id derived for some other line."""
    import numpy as np

    for prompt_id in lookalikes:
        match = DERIVED_ID_RE.fullmatch(prompt_id)
        assert match is not None  # lookalikes are the explicit ids that match DERIVED_ID_RE
        digest, occurrence = int(match[1], 16), int(match[2] or 0)
        position = np.searchsorted(values, np.uint64(digest))
        if position < len(values) and int(values[position]) == digest and occurrence < int(counts[position]):
            return True
    return False


def _raise_duplicate(source: PromptSource, repeated: frozenset[int], checked: PromptFingerprint) -> NoReturn:
    """Find the first id that repeats (second pass, exact) and raise the error naming both lines."""
    name = source.path
    tally = Tally(name, checked)
    first: dict[str, tuple[PromptRecord, bool]] = {}
    for record, explicit in read_source(source, IdMaker(repeated), tally):
        earlier = first.setdefault(record.prompt_id, (record, explicit))
        if earlier[0] is not record:
            duplicate_id(name, record, explicit, *earlier)
    tally.verify()  # not found again: the file changed since the first pass
    raise AssertionError("a duplicate id was detected but not found again")  # pragma: no cover


def iter_prompts(path: Prompts, scan: PromptScan | None = None) -> Iterator[PromptRecord]:
    """Stream the prompts of ``path`` in file order, with their final ids.

    Pass the :class:`PromptScan` of :func:`scan_prompts` (which validates the whole
    file and checks ids); without one the file is scanned first. Memory stays bounded
    either way: records are yielded one at a time. Given the scan, ``path`` may be the
    scan's ``path``: the source is then read with the scan's column mapping.

    The bytes read must be the ones the scan read (its ``fingerprint``): a file whose
    size differs is refused before the first record, one that grows as soon as the read
    passes the scanned length, and any other change when the pass ends, after the
    records read so far were handed out (so a caller that stages them must discard
    what it staged when this raises).

    Raises:
        PromptFileError: for anything that makes the file unusable, or
            ``"<path>: the prompt file changed while the run was starting (...)"``.
    """
    source = as_source(path)
    if scan is None:
        scan = scan_prompts(source)
    elif scan.source is not None and not isinstance(path, PromptSource) and source.path == scan.path:
        source = scan.source
    tally = Tally(source.path, scan.fingerprint)
    return _checked_records(read_source(source, IdMaker(scan.repeated), tally), tally)


def _checked_records(entries: Iterator[Entry], tally: Tally) -> Iterator[PromptRecord]:
    """The records of ``entries``, then the check that the pass read the scanned bytes."""
    for record, _ in entries:
        yield record
    tally.verify()


def read_prompts(path: Prompts) -> list[PromptRecord]:
    """Every prompt of ``path`` as a list (:func:`scan_prompts` + :func:`iter_prompts`)."""
    return list(iter_prompts(path, scan_prompts(path)))
