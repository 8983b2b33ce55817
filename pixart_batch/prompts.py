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
    both kinds, and not together with flags.  Exact sizes are at most
    2147483647 pixels per side (what the model supports is checked later).

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

    No text field (prompt, negative prompt, id) may contain a NUL character,
    so the ``"\\0"`` separator cannot occur in the text and different prompts
    always get different keys.

Empty values
    In ``.csv`` an empty cell means "not given" (CSV has no null).  In
    ``.jsonl`` and ``.parquet`` a null (or missing key) means "not given",
    while an empty ``negative_prompt`` string is an explicit empty negative
    prompt.

Files
    UTF-8; a leading byte-order mark is ignored.  Only regular files (a symlink
    to one is fine) and object-store objects are read: a FIFO, directory,
    device or socket is refused before it is opened.  :func:`scan_prompts`
    records a fingerprint of the bytes it read (:class:`PromptFingerprint`);
    :func:`iter_prompts` refuses a file whose bytes are not the same ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import stat
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from pixart_batch.errors import PromptFileError, first_line

if TYPE_CHECKING:
    import numpy as np
    from pyarrow import NativeFile

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "PromptFingerprint",
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
_MAX_SIDE = 2**31 - 1
"""Largest width/height accepted (sizes are stored as int32; model limits are checked later)."""


_Entry = tuple[PromptRecord, bool]
"""A record and whether its id was explicit (which :func:`read_prompts` needs)."""


# --------------------------------------------------------------------------- errors


def _quote(text: str) -> str:
    """Quote user text for a message: one line, at most ~60 characters."""
    if len(text) > _QUOTE_LIMIT:
        text = text[:_QUOTE_LIMIT] + "..."
    return repr(text)


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


def _digits_value(digits: str) -> int:
    """``int(digits)``, but ``_MAX_SIDE + 1`` for anything longer than 10 digits.

    So a number of thousands of digits is just "too large" (``int()`` of it would
    raise Python's integer-string-conversion limit error).
    """
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 10 else _MAX_SIDE + 1


def _too_large(label: str, value: str, source: str) -> NoReturn:
    """Raise the error for a size above :data:`_MAX_SIDE`."""
    _fail(source, f"{label} is too large (got {_quote(value)}); sizes are at most {_MAX_SIDE} pixels per side")


def _parse_size(value: str, label: str, source: str) -> tuple[int, int]:
    """Parse an ``h:w`` size of positive integers (at most ``_MAX_SIDE``) into (width, height)."""
    match = _SIZE_RE.fullmatch(value)
    if match:
        height, width = _digits_value(match[1]), _digits_value(match[2])
        if height > 0 and width > 0:
            if max(height, width) > _MAX_SIDE:
                _too_large(label, value, source)
            return width, height
    _fail(source, f"{label} needs two positive integers h:w in pixels (got {_quote(value)})")


def _no_nul(text: str, what: str, source: str) -> None:
    """Refuse a NUL character in a text field (it separates the parts of a derived id's key)."""
    position = text.find("\0")
    if position >= 0:
        _fail(source, f"{what} contains a NUL byte (character {position + 1}); remove it")


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
    _no_nul(text, "prompt text", source)
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
    _no_nul(value, "'id'", source)
    if not _ID_RE.fullmatch(value):
        _fail(
            source,
            f"id {_quote(value)} is not allowed: ids are 1-128 characters from A-Z a-z 0-9 _ - (they become output keys)",
        )
    return value


# --------------------------------------------------------------------------- rows


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
        number = _digits_value(match[1])
    if number is None or number <= 0:
        shown = str(value) if isinstance(value, (str, int, float)) else f"a {type(value).__name__}"
        _fail(source, f"'{key}' must be a positive integer (got {_quote(shown)})")
    if number > _MAX_SIDE:
        _too_large(f"'{key}'", str(value), source)
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
    _no_nul(raw_prompt, "'prompt'", source)
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
        _no_nul(negative, "'negative_prompt'", source)
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


@dataclass(frozen=True)
class PromptFingerprint:
    """Which bytes a pass over a prompt file read, so a later pass can tell it reads the same ones."""

    file_size: int | None
    """Size the storage reported when the pass opened the file (``None`` if it reports none)."""
    mtime_ns: int | None
    """Modification time an object store reported (``None`` for local files, where only bytes count)."""
    bytes_read: int
    """Bytes the pass read."""
    sha256: str
    """Hex sha256 of the bytes read in order; for Parquet (read at offsets, all of the ranges
    it needs but not every byte) of the sorted ``(offset, length, sha256)`` of each range."""


class _Tally:
    """Fingerprints the bytes one pass reads and, given an earlier pass's fingerprint, checks them.

    The checks run as early as they can: the size the storage reports when the file is
    opened, then the count of bytes read as soon as it passes the earlier count, and the
    hash once the whole file has been read (:meth:`verify`).
    """

    def __init__(self, name: str, expected: PromptFingerprint | None = None) -> None:
        self.name = name
        self.expected = expected
        self.file_size: int | None = None
        self.mtime_ns: int | None = None
        self.bytes_read = 0
        self._hash = hashlib.sha256()
        self._ranges: list[bytes] = []

    def opened(self, file_size: int | None, mtime_ns: int | None) -> None:
        """Note what the storage says about the file; refuse one that differs from the earlier pass's."""
        self.file_size, self.mtime_ns = file_size, mtime_ns
        expected = self.expected
        if expected is None:
            return
        if file_size is not None and expected.file_size is not None and file_size != expected.file_size:
            self._changed(f"it has {file_size} bytes, {expected.file_size} when it was checked")
        if mtime_ns is not None and expected.mtime_ns is not None and mtime_ns != expected.mtime_ns:
            self._changed("its modification time differs from when it was checked")

    def add(self, data: bytes, offset: int | None = None) -> None:
        """Count and hash bytes just read (``offset``: where, for a file read at offsets)."""
        self.bytes_read += len(data)
        if offset is None:
            self._hash.update(data)
        else:
            digest = hashlib.sha256(data).digest()
            self._ranges.append(offset.to_bytes(8, "big") + len(data).to_bytes(8, "big") + digest)
        if self.expected is not None and self.bytes_read > self.expected.bytes_read:
            self._changed(f"more than the {self.expected.bytes_read} bytes that were checked")

    def fingerprint(self) -> PromptFingerprint:
        """The fingerprint of what was read so far."""
        digest = self._hash.copy()
        for entry in sorted(self._ranges):
            digest.update(entry)
        return PromptFingerprint(self.file_size, self.mtime_ns, self.bytes_read, digest.hexdigest())

    def verify(self) -> None:
        """Refuse (after a whole pass) bytes that are not the ones the earlier pass read."""
        expected = self.expected
        if expected is None:
            return
        if self.bytes_read != expected.bytes_read:
            self._changed(f"{self.bytes_read} bytes read, {expected.bytes_read} when it was checked")
        if self.fingerprint().sha256 != expected.sha256:
            self._changed("its bytes differ from the ones that were checked")

    def _changed(self, detail: str) -> NoReturn:
        _fail(
            self.name,
            f"the prompt file changed while the run was starting ({detail}); re-run when it is no longer being written",
        )


class _CheckedRaw(io.RawIOBase):
    """A raw stream over ``source`` (a local file, or a pyarrow stream/file) that tallies what it reads.

    Streamed (``seekable=False``), it is buffered and read by lines, and checks the tally
    when it reaches the end. With ``seekable`` (for Parquet) it also seeks, and tallies
    each read with its offset; the caller checks the tally after the pass.
    """

    def __init__(self, source: io.FileIO | NativeFile, tally: _Tally, seekable: bool = False) -> None:
        self._source = source
        self._tally = tally
        self._seekable = seekable
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        self._position = self._source.seek(offset, whence)
        return self._position

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        if size:
            self._tally.add(data, self._position if self._seekable else None)
            self._position += size
        elif len(buffer) and not self._seekable:
            self._tally.verify()  # the end: the earliest point the whole file is known
        return size

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _regular_or_fail(name: str, mode: int) -> None:
    """Refuse anything but a regular file (a prompt file is read twice, so it cannot be a stream)."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        _fail(name, "is a directory, not a prompt file")
    kind = next((text for test, text in _NOT_REGULAR if test(mode)), "not a regular file")
    _fail(name, f"is {kind}, not a regular file; prompt files must be regular files or object-store objects")


def _open_binary(path: str | os.PathLike[str], tally: _Tally, seekable: bool = False) -> io.BufferedReader | _CheckedRaw:
    """Open a prompt file for binary reading (the one place that touches storage).

    Local paths open directly, once ``stat`` says they are regular files (so a FIFO is
    never opened, and never blocks); ``s3://``, ``gs://`` and other URIs go through
    ``pyarrow.fs`` (credentials from the usual environment), streamed. Every byte read
    goes through ``tally``.
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
            if info.type != fs.FileType.File:
                _fail(name, "is not a file or object; prompt files must be regular files or object-store objects")
            tally.opened(info.size, info.mtime_ns)
            if seekable:
                return _CheckedRaw(filesystem.open_input_file(inner), tally, seekable=True)
            return io.BufferedReader(_CheckedRaw(filesystem.open_input_stream(inner), tally), buffer_size=1 << 20)
        except (OSError, ValueError) as exc:
            _fail(name, f"cannot open ({first_line(exc, limit=200)})")
    name = name.removeprefix("file://")
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    try:
        _regular_or_fail(name, os.stat(name).st_mode)
        # Non-blocking, so that opening a FIFO swapped in after the stat cannot hang either.
        fd = os.open(name, os.O_RDONLY | nonblocking | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        _fail(name, "no such file")
    except IsADirectoryError:
        _fail(name, "is a directory, not a prompt file")
    except PermissionError:
        _fail(name, "permission denied")
    except OSError as exc:
        _fail(name, f"cannot open ({exc.strerror or exc})")
    try:
        info = os.fstat(fd)
        _regular_or_fail(name, info.st_mode)
        tally.opened(info.st_size, None)
        if nonblocking:
            os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    if seekable:
        return _CheckedRaw(raw, tally, seekable=True)
    return io.BufferedReader(_CheckedRaw(raw, tally), buffer_size=1 << 16)


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


def _iter_txt(path: str | os.PathLike[str], name: str, ids: _IdMaker, tally: _Tally) -> Iterator[_Entry]:
    """Read a ``.txt`` file: one prompt per non-blank line, optional size flags."""
    saw_lines = found = False
    with _open_binary(path, tally) as stream:
        for number, line in _decoded_lines(stream, name):
            saw_lines = True
            text = line.strip()
            if not text:
                continue
            source = f"{name}:{number}"
            _no_nul(line, "prompt text", source)  # here, so the character counts from the line start
            prompt, width, height, ratio = parse_prompt_line(text, source)
            prompt_id = ids.derive(text.encode("utf-8"))
            found = True
            yield PromptRecord(prompt_id, prompt, None, width, height, ratio, source), False
    if not found:
        _no_prompts(name, saw_lines)


def _iter_jsonl(path: str | os.PathLike[str], name: str, ids: _IdMaker, tally: _Tally) -> Iterator[_Entry]:
    """Read a ``.jsonl``/``.ndjson`` file: one JSON object per non-blank line."""
    saw_lines = found = False
    with _open_binary(path, tally) as stream:
        for number, line in _decoded_lines(stream, name):
            saw_lines = True
            if not line.strip():
                continue
            source = f"{name}:{number}"
            try:
                obj = json.loads(line.rstrip())  # rstrip: columns count from the line start
            except json.JSONDecodeError as exc:
                _fail(source, f"not valid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                _fail(source, "JSON nested too deeply (arrays/objects inside each other) to read")
            except ValueError as exc:  # an integer of thousands of digits
                _fail(source, f"cannot read JSON ({first_line(exc, limit=200).split(';')[0]})")
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


def _iter_csv(path: str | os.PathLike[str], name: str, ids: _IdMaker, tally: _Tally) -> Iterator[_Entry]:
    """Read a ``.csv`` file with a header row; errors name the line a row starts on."""
    found = False
    with _open_binary(path, tally) as stream:
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


def _iter_parquet(path: str | os.PathLike[str], name: str, ids: _IdMaker, tally: _Tally) -> Iterator[_Entry]:
    """Read a ``.parquet`` file batch by batch; errors name the 1-based row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    with _open_binary(path, tally, seekable=True) as stream:
        try:
            parquet = pq.ParquetFile(stream)
        except (pa.ArrowException, OSError) as exc:
            _fail(name, f"not a readable Parquet file ({first_line(exc, limit=200)})")
        columns = parquet.schema_arrow.names
        _columns_or_fail(columns, name)
        known = [c for c in _TABLE_COLUMNS if c in columns]
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=known)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                _fail(f"{name}:row {row + 1}", f"cannot read Parquet data ({first_line(exc, limit=200)})")
            if batch is None:
                break
            values = [batch.column(c).to_pylist() for c in known]
            for cells in zip(*values, strict=True):
                row += 1
                yield _record_from_fields(dict(zip(known, cells, strict=True)), f"{name}:row {row}", ids)
    if row == 0:
        _fail(name, "no prompts (file has no rows)")


_READERS: dict[str, Callable[[str | os.PathLike[str], str, _IdMaker, _Tally], Iterator[_Entry]]] = {
    ".txt": _iter_txt,
    ".jsonl": _iter_jsonl,
    ".ndjson": _iter_jsonl,
    ".csv": _iter_csv,
    ".parquet": _iter_parquet,
}


def _entries(path: str | os.PathLike[str], ids: _IdMaker, tally: _Tally) -> Iterator[_Entry]:
    """Pick the reader for ``path`` by extension (raising now for an unknown one); it reads through ``tally``."""
    name = os.fsdecode(path)
    extension = os.path.splitext(name)[1].lower()
    reader = _READERS.get(extension)
    if reader is None:
        _fail(
            name,
            f"unsupported prompt file type {extension or '(no extension)'!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    return reader(path, name, ids, tally)


def _duplicate_id(name: str, record: PromptRecord, explicit: bool, earlier: PromptRecord, earlier_explicit: bool) -> NoReturn:
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
    fingerprint: PromptFingerprint | None = None
    """The bytes the scan read; :func:`iter_prompts` refuses a file that no longer has them
    (``None``: not checked)."""
    largest_side: tuple[int, str] | None = None
    """The largest requested width or height (``--hw`` / width / height) and where it is, so sizes
    beyond the model's limit are refused before anything starts (``None``: no size requested)."""


def scan_prompts(path: str | os.PathLike[str]) -> PromptScan:
    """Validate every prompt of ``path`` and check that ids are unique, in bounded memory.

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

    name = os.fsdecode(path)
    tally = _Tally(name)
    ids = _IdMaker()
    explicit = array("Q")
    lookalikes: list[str] = []  # explicit ids shaped like derived ones (could collide)
    count = 0
    largest: tuple[int, str] | None = None
    for record, is_explicit in _entries(path, ids, tally):
        count += 1
        side = max(record.width or 0, record.height or 0)
        if side and (largest is None or side > largest[0]):
            largest = (side, record.source)
        if is_explicit:
            explicit.append(_id_digest(record.prompt_id))
            if _DERIVED_ID_RE.fullmatch(record.prompt_id):
                lookalikes.append(record.prompt_id)
    digests = np.frombuffer(ids.digests, dtype=np.uint64) if len(ids.digests) else np.zeros(0, np.uint64)
    values, counts = np.unique(digests, return_counts=True)
    repeated = frozenset(int(v) for v in values[counts > 1])
    clash = bool(lookalikes) and _derived_clash(lookalikes, values, counts)
    explicit_values, explicit_counts = (
        np.unique(np.frombuffer(explicit, dtype=np.uint64), return_counts=True) if len(explicit) else (None, None)
    )
    if clash or (explicit_counts is not None and (explicit_counts > 1).any()):
        _raise_duplicate(path, repeated, tally.fingerprint())
    return PromptScan(name, count, repeated, tally.fingerprint(), largest)


def _derived_clash(lookalikes: list[str], values: np.ndarray, counts: np.ndarray) -> bool:
    """Whether an explicit id equals an id derived for some other line."""
    import numpy as np

    for prompt_id in lookalikes:
        match = _DERIVED_ID_RE.fullmatch(prompt_id)
        assert match is not None  # lookalikes are the explicit ids that match _DERIVED_ID_RE
        digest, occurrence = int(match[1], 16), int(match[2] or 0)
        position = np.searchsorted(values, np.uint64(digest))
        if position < len(values) and int(values[position]) == digest and occurrence < int(counts[position]):
            return True
    return False


def _raise_duplicate(path: str | os.PathLike[str], repeated: frozenset[int], fingerprint: PromptFingerprint) -> NoReturn:
    """Find the first id that repeats (second pass, exact) and raise the error naming both lines."""
    name = os.fsdecode(path)
    tally = _Tally(name, fingerprint)
    first: dict[str, tuple[PromptRecord, bool]] = {}
    for record, explicit in _entries(path, _IdMaker(repeated), tally):
        earlier = first.setdefault(record.prompt_id, (record, explicit))
        if earlier[0] is not record:
            _duplicate_id(name, record, explicit, *earlier)
    tally.verify()  # not found again: the file changed since the first pass
    raise AssertionError("a duplicate id was detected but not found again")  # pragma: no cover


def iter_prompts(path: str | os.PathLike[str], scan: PromptScan | None = None) -> Iterator[PromptRecord]:
    """Stream the prompts of ``path`` in file order, with their final ids.

    Pass the :class:`PromptScan` of :func:`scan_prompts` (which validates the whole
    file and checks ids); without one the file is scanned first. Memory stays bounded
    either way: records are yielded one at a time.

    The bytes read must be the ones the scan read (its ``fingerprint``): a file whose
    size differs is refused before the first record, one that grows as soon as the read
    passes the scanned length, and any other change when the pass ends, after the
    records read so far were handed out (so a caller that stages them must discard
    what it staged when this raises).

    Raises:
        PromptFileError: for anything that makes the file unusable, or
            ``"<path>: the prompt file changed while the run was starting (...)"``.
    """
    if scan is None:
        scan = scan_prompts(path)
    tally = _Tally(os.fsdecode(path), scan.fingerprint)
    return _checked_records(_entries(path, _IdMaker(scan.repeated), tally), tally)


def _checked_records(entries: Iterator[_Entry], tally: _Tally) -> Iterator[PromptRecord]:
    """The records of ``entries``, then the check that the pass read the scanned bytes."""
    for record, _ in entries:
        yield record
    tally.verify()


def read_prompts(path: str | os.PathLike[str]) -> list[PromptRecord]:
    """Every prompt of ``path`` as a list (:func:`scan_prompts` + :func:`iter_prompts`)."""
    return list(iter_prompts(path, scan_prompts(path)))
