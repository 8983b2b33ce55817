"""Read prompt files (``.txt``, ``.jsonl``/``.ndjson``, ``.csv``, ``.parquet``) into records.

Every prompt becomes a :class:`PromptRecord` with a stable, file-unique id.
Anything wrong with a file is raised as a one-line
:class:`~pixart_batch.errors.PromptFileError` that starts with the file path
as given and, where there is one, the line (``FILE:LINE: ...``) or table row
(``FILE:row N: ...``).

Size requests
    ``.txt`` lines may end with PixArt-style size flags: ``--ar h:w`` or
    ``--aspect_ratio h:w`` (an aspect ratio, height:width; positive numbers)
    or ``--hw h:w`` (an exact size: height and width in pixels; positive
    integers).  The flags and the whitespace around them are removed from the
    prompt text.  The ``prompt`` of a ``.jsonl``/``.csv``/``.parquet`` row is
    parsed the same way; those rows may instead carry ``width`` and
    ``height`` (together) or ``aspect_ratio`` (an ``"h:w"`` string), but not
    both kinds, and not together with flags.

Ids
    An explicit ``id`` (field or column; a JSON integer is turned into text)
    must be 1-128 characters from ``[A-Za-z0-9_-]``, because ids become keys
    of the output.  A row without one gets ``"p" + sha256(key)[:16]``, where
    the key is the prompt text as written (flags included, surrounding
    whitespace stripped) followed by ``" --hw h:w"`` / ``" --ar h:w"`` for
    size columns and ``"\\0" + negative_prompt`` when a negative prompt is
    given.  A ``.txt`` line therefore hashes its own stripped text, the same
    prompt gets the same id in every format, and inserting or appending
    prompts leaves existing ids alone.  The 2nd, 3rd, ... occurrence of an
    identical key gets ``-1``, ``-2``, ... appended.

Empty values
    In ``.csv`` an empty cell means "not given" (CSV has no null).  In
    ``.jsonl`` and ``.parquet`` a null (or missing key) means "not given",
    while an empty ``negative_prompt`` string is an explicit empty negative
    prompt.

Files are UTF-8; a leading byte-order mark is ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn

from pixart_batch.errors import PromptFileError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "PromptRecord",
    "PromptScan",
    "iter_prompts",
    "parse_prompt_line",
    "read_prompts",
    "scan_prompts",
]


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


SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".ndjson", ".csv", ".parquet")
"""File extensions :func:`iter_prompts` understands (matched case-insensitively)."""

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_FLAG_RE = re.compile(r"(?<!\S)--(?:ar|aspect_ratio|hw)(?!\S)")
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_RATIO_RE = re.compile(rf"({_NUMBER}):({_NUMBER})")
_SIZE_RE = re.compile(r"([0-9]+):([0-9]+)")
_INT_TEXT_RE = re.compile(r"\s*([0-9]+)(?:\.0*)?\s*")
_TABLE_COLUMNS = ("prompt", "id", "negative_prompt", "width", "height", "aspect_ratio")
_PARQUET_BATCH_ROWS = 8192
_QUOTE_LIMIT = 60


_Entry = tuple[PromptRecord, bool]
"""A record and whether its id was explicit (which :func:`read_prompts` needs)."""


# --------------------------------------------------------------------------- errors


def _quote(text: str) -> str:
    """Quote user text for a message: one line, at most ~60 characters."""
    if len(text) > _QUOTE_LIMIT:
        text = text[:_QUOTE_LIMIT] + "..."
    return repr(text)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text, cut to 200 characters, for a message."""
    lines = str(exc).splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _fail(where: str, message: str) -> NoReturn:
    """Raise a one-line PromptFileError ``"<where>: <message>"``."""
    raise PromptFileError(" ".join(f"{where}: {message}".splitlines()))


# --------------------------------------------------------------------------- flags


def _parse_ratio(value: str, label: str, source: str) -> float:
    """Parse an ``h:w`` aspect ratio of positive numbers into height/width."""
    match = _RATIO_RE.fullmatch(value.strip())
    if match:
        height, width = float(match[1]), float(match[2])
        if height > 0 and width > 0 and 0 < height / width < math.inf:
            return height / width
    _fail(source, f"{label} needs two positive numbers h:w (got {_quote(value)})")


def _parse_size(value: str, label: str, source: str) -> tuple[int, int]:
    """Parse an ``h:w`` size of positive integers into (width, height)."""
    match = _SIZE_RE.fullmatch(value)
    if match and int(match[1]) > 0 and int(match[2]) > 0:
        return int(match[2]), int(match[1])
    _fail(source, f"{label} needs two positive integers h:w in pixels (got {_quote(value)})")


def parse_prompt_line(text: str, source: str) -> tuple[str, int | None, int | None, float | None]:
    """Split one prompt line into ``(prompt, width, height, aspect_ratio)``.

    Size flags (``--ar h:w``, ``--aspect_ratio h:w``, ``--hw h:w``) are
    recognised as whitespace-separated tokens and must end the line; they and
    the whitespace around them are removed, everything before them (e.g. a
    trailing comma) stays.  ``--`` anywhere else in the text is ordinary text.

    Raises:
        PromptFileError: ``"<source>: ..."`` for a malformed, repeated or
            conflicting flag, text after the flags, or empty prompt text.
    """
    text = text.strip()
    match = _FLAG_RE.search(text) if "--" in text else None
    if match is None:
        if not text:
            _fail(source, "prompt text is empty")
        return text, None, None, None

    prompt = text[: match.start()].rstrip()
    tokens = text[match.start() :].split()
    width = height = ratio = None
    ratio_flag = ""
    for i in range(0, len(tokens), 2):
        flag = tokens[i]
        if flag not in ("--ar", "--aspect_ratio", "--hw"):
            _fail(
                source,
                f"unexpected {_quote(flag)} after a size flag: size flags must be at the end of "
                "the line (only --ar, --aspect_ratio and --hw are recognised)",
            )
        if i + 1 == len(tokens):
            _fail(source, f"{flag} needs a value h:w")
        if flag == "--hw":
            if width is not None:
                _fail(source, "more than one --hw flag")
            width, height = _parse_size(tokens[i + 1], flag, source)
        else:
            if ratio is not None:
                _fail(source, f"more than one aspect ratio flag ({ratio_flag} and {flag})")
            ratio, ratio_flag = _parse_ratio(tokens[i + 1], flag, source), flag
    if ratio is not None and width is not None:
        _fail(source, f"both {ratio_flag} and --hw given; use one (aspect ratio or exact size)")
    if not prompt:
        _fail(source, "prompt text is empty (only size flags)")
    return prompt, width, height, ratio


# --------------------------------------------------------------------------- ids


class _IdMaker:
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


_DERIVED_ID_RE = re.compile(r"p([0-9a-f]{16})(?:-([1-9][0-9]*))?")


def _id_digest(prompt_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(prompt_id.encode(), digest_size=8).digest(), "big")


def _explicit_id(value: Any, source: str) -> str:
    """Validate an explicit id (text, or a JSON/table integer turned into text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        _fail(source, f"'id' must be a string or an integer, not {type(value).__name__}")
    if not _ID_RE.fullmatch(value):
        _fail(
            source,
            f"id {_quote(value)} is not allowed: ids are 1-128 characters from "
            "A-Z a-z 0-9 _ - (they become output keys)",
        )
    return value


# --------------------------------------------------------------------------- rows


def _positive_int(value: Any, key: str, source: str) -> int:
    """Convert a width/height value (int, integral float or digit text) to a positive int."""
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and (match := _INT_TEXT_RE.fullmatch(value)):
        number = int(match[1])
    if number is None or number <= 0:
        _fail(source, f"'{key}' must be a positive integer (got {_quote(str(value))})")
    return number


def _record_from_fields(fields: dict[str, Any], source: str, ids: _IdMaker) -> _Entry:
    """Build a record from a jsonl object or table row (``None`` values = not given).

    Returns the record and whether its id was explicit.
    """
    raw_prompt = fields.get("prompt")
    if raw_prompt is None:
        _fail(source, "'prompt' is missing or null")
    if not isinstance(raw_prompt, str):
        _fail(source, f"'prompt' must be a string, not {type(raw_prompt).__name__}")
    prompt, width, height, ratio = parse_prompt_line(raw_prompt, source)
    key = raw_prompt.strip()

    raw_width, raw_height = fields.get("width"), fields.get("height")
    if (raw_width is None) != (raw_height is None):
        given, missing = ("width", "height") if raw_height is None else ("height", "width")
        _fail(source, f"'{given}' given without '{missing}'; give both or neither")
    if raw_width is not None:
        if width is not None or ratio is not None:
            _fail(source, "size given twice: as a flag in the prompt and as 'width'/'height'")
        width = _positive_int(raw_width, "width", source)
        height = _positive_int(raw_height, "height", source)
        key += f" --hw {height}:{width}"

    raw_ratio = fields.get("aspect_ratio")
    if raw_ratio is not None:
        if width is not None or ratio is not None:
            _fail(source, "size given twice: 'aspect_ratio' together with a size flag or 'width'/'height'")
        if not isinstance(raw_ratio, str):
            _fail(source, f"'aspect_ratio' must be a string 'h:w', not {type(raw_ratio).__name__}")
        ratio = _parse_ratio(raw_ratio, "'aspect_ratio'", source)
        key += f" --ar {raw_ratio.strip()}"

    negative = fields.get("negative_prompt")
    if negative is not None:
        if not isinstance(negative, str):
            _fail(source, f"'negative_prompt' must be a string, not {type(negative).__name__}")
        negative = negative.strip()
        key += "\0" + negative

    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError:
        _fail(source, "text contains an unpaired surrogate escape (e.g. \\ud800); not valid Unicode")
    raw_id = fields.get("id")
    explicit = raw_id is not None
    prompt_id = _explicit_id(raw_id, source) if explicit else ids.derive(key_bytes)
    return PromptRecord(prompt_id, prompt, negative, width, height, ratio, source), explicit


# --------------------------------------------------------------------------- file access


class _ArrowRaw(io.RawIOBase):
    """A pyarrow input stream as a Python raw stream (so it can be buffered and read by lines)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def _open_binary(path: str | os.PathLike[str], seekable: bool = False) -> BinaryIO:
    """Open a prompt file for binary reading (the one place that touches storage).

    Local paths open directly; ``s3://``, ``gs://`` and other URIs go through
    ``pyarrow.fs`` (credentials from the usual environment), streamed.
    """
    name = os.fsdecode(path)
    if "://" in name and not name.startswith("file://"):
        from pyarrow import fs

        try:
            filesystem, inner = fs.FileSystem.from_uri(name)
            info = filesystem.get_file_info(inner)
            if info.type == fs.FileType.NotFound:
                _fail(name, "no such file")
            if info.type == fs.FileType.Directory:
                _fail(name, "is a directory, not a prompt file")
            if seekable:
                return filesystem.open_input_file(inner)
            return io.BufferedReader(_ArrowRaw(filesystem.open_input_stream(inner)), buffer_size=1 << 20)
        except (OSError, ValueError) as exc:
            _fail(name, f"cannot open ({_first_line(exc)})")
    name = name.removeprefix("file://")
    try:
        return open(name, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        _fail(name, "no such file")
    except IsADirectoryError:
        _fail(name, "is a directory, not a prompt file")
    except PermissionError:
        _fail(name, "permission denied")
    except OSError as exc:
        _fail(name, f"cannot open ({exc.strerror or exc})")


def _decoded_lines(stream: Iterable[bytes], name: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` with line endings kept; raise for bytes that are not UTF-8."""
    for number, raw in enumerate(stream, 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
            if not raw:  # the file is only a byte-order mark
                return
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            hint = "save the file as UTF-8"
            if number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                hint = "the file looks like UTF-16; save it as UTF-8"
            _fail(
                f"{name}:{number}",
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); {hint}",
            )


def _no_prompts(name: str, saw_lines: bool) -> NoReturn:
    """Raise the error for a text file that held no prompts."""
    _fail(name, "no prompts (only blank lines)" if saw_lines else "no prompts (file is empty)")


# --------------------------------------------------------------------------- readers


def _iter_txt(path: str | os.PathLike[str], name: str, ids: _IdMaker) -> Iterator[_Entry]:
    """Read a ``.txt`` file: one prompt per non-blank line, optional size flags."""
    saw_lines = found = False
    with _open_binary(path) as stream:
        for number, line in _decoded_lines(stream, name):
            saw_lines = True
            text = line.strip()
            if not text:
                continue
            source = f"{name}:{number}"
            prompt, width, height, ratio = parse_prompt_line(text, source)
            prompt_id = ids.derive(text.encode("utf-8"))
            found = True
            yield PromptRecord(prompt_id, prompt, None, width, height, ratio, source), False
    if not found:
        _no_prompts(name, saw_lines)


def _iter_jsonl(path: str | os.PathLike[str], name: str, ids: _IdMaker) -> Iterator[_Entry]:
    """Read a ``.jsonl``/``.ndjson`` file: one JSON object per non-blank line."""
    saw_lines = found = False
    with _open_binary(path) as stream:
        for number, line in _decoded_lines(stream, name):
            saw_lines = True
            if not line.strip():
                continue
            source = f"{name}:{number}"
            try:
                obj = json.loads(line.rstrip())  # rstrip: columns count from the line start
            except json.JSONDecodeError as exc:
                _fail(source, f"not valid JSON ({exc.msg} at column {exc.colno})")
            if not isinstance(obj, dict):
                _fail(source, f"expected a JSON object with a 'prompt' key, got {type(obj).__name__}")
            found = True
            yield _record_from_fields(obj, source, ids)
    if not found:
        _no_prompts(name, saw_lines)


def _columns_or_fail(columns: list[str], source: str) -> None:
    """Check a table header: a ``prompt`` column, no repeated known column."""
    for column in _TABLE_COLUMNS:
        if columns.count(column) > 1:
            _fail(source, f"column {column!r} appears more than once")
    if "prompt" not in columns:
        _fail(source, f"no 'prompt' column (columns: {', '.join(columns) or 'none'})")


def _iter_csv(path: str | os.PathLike[str], name: str, ids: _IdMaker) -> Iterator[_Entry]:
    """Read a ``.csv`` file with a header row; errors name the line a row starts on."""
    found = False
    with _open_binary(path) as stream:
        lines = (line for _, line in _decoded_lines(stream, name))
        reader = csv.reader(lines, strict=True, skipinitialspace=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                _fail(name, "no prompts (file is empty)")
            columns = [column.strip() for column in header]
            _columns_or_fail(columns, name)
            known = [(i, c) for i, c in enumerate(columns) if c in _TABLE_COLUMNS]
            start = reader.line_num + 1
            for row in reader:
                source = f"{name}:{start}"
                if any(cell.strip() for cell in row):
                    if len(row) != len(columns):
                        _fail(source, f"row has {len(row)} fields but the header has {len(columns)}")
                    fields = {c: row[i] if c == "prompt" or row[i].strip() else None for i, c in known}
                    found = True
                    yield _record_from_fields(fields, source, ids)
                start = reader.line_num + 1
        except csv.Error as exc:
            _fail(f"{name}:{start}", f"malformed CSV ({exc})")
    if not found:
        _fail(name, "no prompts (no rows after the header)")


def _iter_parquet(path: str | os.PathLike[str], name: str, ids: _IdMaker) -> Iterator[_Entry]:
    """Read a ``.parquet`` file batch by batch; errors name the 1-based row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    with _open_binary(path, seekable=True) as stream:
        try:
            parquet = pq.ParquetFile(stream)
        except (pa.ArrowException, OSError) as exc:
            _fail(name, f"not a readable Parquet file ({_first_line(exc)})")
        columns = parquet.schema_arrow.names
        _columns_or_fail(columns, name)
        known = [c for c in _TABLE_COLUMNS if c in columns]
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=known)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                _fail(f"{name}:row {row + 1}", f"cannot read Parquet data ({_first_line(exc)})")
            if batch is None:
                break
            values = [batch.column(c).to_pylist() for c in known]
            for cells in zip(*values):
                row += 1
                yield _record_from_fields(dict(zip(known, cells)), f"{name}:row {row}", ids)
    if row == 0:
        _fail(name, "no prompts (file has no rows)")


_READERS: dict[str, Callable[[str | os.PathLike[str], str, _IdMaker], Iterator[_Entry]]] = {
    ".txt": _iter_txt,
    ".jsonl": _iter_jsonl,
    ".ndjson": _iter_jsonl,
    ".csv": _iter_csv,
    ".parquet": _iter_parquet,
}


def _entries(path: str | os.PathLike[str], ids: _IdMaker) -> Iterator[_Entry]:
    """Pick the reader for ``path`` by extension (raising now for an unknown one)."""
    name = os.fsdecode(path)
    extension = os.path.splitext(name)[1].lower()
    reader = _READERS.get(extension)
    if reader is None:
        _fail(
            name,
            f"unsupported prompt file type {extension or '(no extension)'!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    return reader(path, name, ids)


def _duplicate_id(
    name: str, record: PromptRecord, explicit: bool, earlier: PromptRecord, earlier_explicit: bool
) -> NoReturn:
    """Raise the error for ``record`` reusing the id of the ``earlier`` one."""

    def where(r: PromptRecord) -> str:
        location = r.source[len(name) + 1 :]  # "N" (a line) or "row N"
        return location if location.startswith("row ") else f"line {location}"

    if explicit == earlier_explicit:
        problem = f"duplicate id {_quote(record.prompt_id)} (first at {where(earlier)})"
    else:
        derived, given = (earlier, record) if explicit else (record, earlier)
        problem = (
            f"id {_quote(record.prompt_id)} derived from the text at {where(derived)} equals the "
            f"explicit id at {where(given)}; give the row at {where(derived)} an explicit id"
        )
    _fail(record.source, problem)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class PromptScan:
    """What a first, validating pass over a prompt file learned (see :func:`scan_prompts`)."""

    path: str
    count: int
    """Prompts in the file."""
    repeated: frozenset[int]
    """Content digests of lines/rows without an explicit id that occur more than once."""


def scan_prompts(path: str | os.PathLike[str]) -> PromptScan:
    """Validate every prompt of ``path`` and check that ids are unique, in bounded memory.

    Streams the file once, keeping 8 bytes per prompt (content digests and explicit-id
    digests in compact arrays) instead of the prompts themselves; a duplicate is then
    located by a second, targeted pass so the error can name both lines.

    Raises:
        PromptFileError: for anything that makes the file unusable, or an id that
            occurs twice (an explicit id repeated, or a derived id equal to an explicit one).
    """
    import numpy as np

    name = os.fsdecode(path)
    ids = _IdMaker()
    explicit = array("Q")
    lookalikes: list[str] = []  # explicit ids shaped like derived ones (could collide)
    count = 0
    for record, is_explicit in _entries(path, ids):
        count += 1
        if is_explicit:
            explicit.append(_id_digest(record.prompt_id))
            if _DERIVED_ID_RE.fullmatch(record.prompt_id):
                lookalikes.append(record.prompt_id)
    digests = np.frombuffer(ids.digests, dtype=np.uint64) if len(ids.digests) else np.zeros(0, np.uint64)
    values, counts = np.unique(digests, return_counts=True)
    repeated = frozenset(int(v) for v in values[counts > 1])
    clash = bool(lookalikes) and _derived_clash(lookalikes, values, counts)
    explicit_values, explicit_counts = np.unique(np.frombuffer(explicit, dtype=np.uint64), return_counts=True) if len(explicit) else (None, None)
    if clash or (explicit_counts is not None and (explicit_counts > 1).any()):
        _raise_duplicate(path, repeated)
    return PromptScan(name, count, repeated)


def _derived_clash(lookalikes: list[str], values, counts) -> bool:
    """Whether an explicit id equals an id derived for some other line."""
    import numpy as np

    for prompt_id in lookalikes:
        match = _DERIVED_ID_RE.fullmatch(prompt_id)
        digest, occurrence = int(match[1], 16), int(match[2] or 0)
        position = np.searchsorted(values, np.uint64(digest))
        if position < len(values) and int(values[position]) == digest and occurrence < int(counts[position]):
            return True
    return False


def _raise_duplicate(path: str | os.PathLike[str], repeated: frozenset[int]) -> NoReturn:
    """Find the first id that repeats (second pass, exact) and raise the error naming both lines."""
    name = os.fsdecode(path)
    first: dict[str, tuple[PromptRecord, bool]] = {}
    for record, explicit in _entries(path, _IdMaker(repeated)):
        earlier = first.setdefault(record.prompt_id, (record, explicit))
        if earlier[0] is not record:
            _duplicate_id(name, record, explicit, *earlier)
    raise AssertionError("a duplicate id was detected but not found again")  # pragma: no cover


def iter_prompts(path: str | os.PathLike[str], scan: PromptScan | None = None) -> Iterator[PromptRecord]:
    """Stream the prompts of ``path`` in file order, with their final ids.

    Pass the :class:`PromptScan` of :func:`scan_prompts` (which validates the whole
    file and checks ids); without one the file is scanned first. Memory stays bounded
    either way: records are yielded one at a time.

    Raises:
        PromptFileError: for anything that makes the file unusable.
    """
    if scan is None:
        scan = scan_prompts(path)
    return (record for record, _ in _entries(path, _IdMaker(scan.repeated)))


def read_prompts(path: str | os.PathLike[str]) -> list[PromptRecord]:
    """Every prompt of ``path`` as a list (:func:`scan_prompts` + :func:`iter_prompts`)."""
    return list(iter_prompts(path, scan_prompts(path)))
