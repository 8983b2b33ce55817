"""Reading a prompt file's bytes: opening it through storage, fingerprinting every pass, decoding lines."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from pixart_batch.errors import first_line

from .records import fail

if TYPE_CHECKING:
    from pyarrow import NativeFile


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
    it needs but not every byte) of the sorted ``(offset, length, sha256)`` of each range; for a
    source of several files (a folder) of the files' ``sha256`` in order."""
    parts: tuple[PromptFingerprint, ...] = ()
    """A source of several files (a folder, a glob): each file's fingerprint, in reading order."""


class Tally:
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
        self._parts: list[Tally] = []

    def part(self, name: str) -> Tally:
        """The tally of the next file of a source of several (a folder): checked against the earlier
        pass's fingerprint of that file; this tally's fingerprint then combines the files'."""
        expected = None
        if self.expected is not None:
            checked = self.expected.parts
            if len(self._parts) >= len(checked):
                self._changed(f"it has more files than the {len(checked)} that were checked")
            expected = checked[len(self._parts)]
        child = Tally(name, expected)
        self._parts.append(child)
        return child

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
        if self._parts:
            parts = tuple(part.fingerprint() for part in self._parts)
            combined = hashlib.sha256("".join(part.sha256 for part in parts).encode())
            sizes = [part.file_size for part in parts]
            total = None if None in sizes else sum(size or 0 for size in sizes)
            read = sum(part.bytes_read for part in parts)
            return PromptFingerprint(total, None, read, combined.hexdigest(), parts)
        digest = self._hash.copy()
        for entry in sorted(self._ranges):
            digest.update(entry)
        return PromptFingerprint(self.file_size, self.mtime_ns, self.bytes_read, digest.hexdigest())

    def verify(self) -> None:
        """Refuse (after a whole pass) bytes that are not the ones the earlier pass read."""
        expected = self.expected
        if expected is None:
            return
        if len(self._parts) != len(expected.parts):
            self._changed(f"{len(self._parts)} files read, {len(expected.parts)} when it was checked")
        for part in self._parts:
            part.verify()
        read = self.fingerprint()
        if read.bytes_read != expected.bytes_read:
            self._changed(f"{read.bytes_read} bytes read, {expected.bytes_read} when it was checked")
        if read.sha256 != expected.sha256:
            self._changed("its bytes differ from the ones that were checked")

    def _changed(self, detail: str) -> NoReturn:
        fail(
            self.name,
            f"the prompt file changed while the run was starting ({detail}); "
            "re-run when it is no longer being written",
        )


class CheckedRaw(io.RawIOBase):
    """A raw stream over ``source`` (a local file, or a pyarrow stream/file) that tallies what it reads.

    Streamed (``seekable=False``), it is buffered and read by lines, and checks the tally
    when it reaches the end. With ``seekable`` (for Parquet) it also seeks, and tallies
    each read with its offset; the caller checks the tally after the pass.
    """

    def __init__(self, source: io.FileIO | NativeFile, tally: Tally, seekable: bool = False) -> None:
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


def open_binary(
    path: str | os.PathLike[str], tally: Tally, seekable: bool = False
) -> io.BufferedReader | CheckedRaw:
    """Open a prompt file for binary reading, through :mod:`pixart_batch.storage` (the one place that
    touches storage).

    Local paths open once ``stat`` says they are regular files (so a FIFO is never opened, and never
    blocks); ``s3://``, ``gs://`` and other URIs go through ``pyarrow.fs`` (credentials from the usual
    environment), streamed. Every byte read goes through ``tally``.
    """
    from pixart_batch.inputs import NotRegularFileError, is_uri, locate_file, open_regular

    from . import hub

    name = os.fsdecode(path)
    remote = is_uri(name)
    if not remote:
        name = name.removeprefix("file://")
    try:
        location = hub.location(name) if hub.is_hub(name) else locate_file(os.fsdecode(path))
        stream, size, mtime_ns = open_regular(location, seekable=seekable)
    except NotRegularFileError as exc:
        _refuse(name, exc.kind)
    except Exception as exc:
        if hub.is_hub(name):
            hub.refuse(name, exc)
        if not isinstance(exc, (OSError, ValueError)):
            raise
        if remote:
            fail(name, f"cannot open ({first_line(exc, limit=200)})")
        if isinstance(exc, ValueError):
            raise
        if isinstance(exc, FileNotFoundError):
            fail(name, "no such file")
        if isinstance(exc, IsADirectoryError):
            fail(name, "is a directory, not a prompt file")
        if isinstance(exc, PermissionError):
            fail(name, "permission denied")
        fail(name, f"cannot open ({exc.strerror or exc})")
    try:
        tally.opened(size, mtime_ns)
    except BaseException:
        stream.close()
        raise
    if seekable:
        return CheckedRaw(stream, tally, seekable=True)
    return io.BufferedReader(CheckedRaw(stream, tally), buffer_size=1 << 20 if remote else 1 << 16)


def _refuse(name: str, kind: str) -> NoReturn:
    """Raise the error for a path that is not a regular file or object (see ``NotRegularFileError``)."""
    if kind == "missing":
        fail(name, "no such file")
    if kind == "directory":
        fail(name, "is a directory, not a prompt file")
    if kind == "not a file or object":
        fail(name, "is not a file or object; prompt files must be regular files or object-store objects")
    fail(name, f"is {kind}, not a regular file; prompt files must be regular files or object-store objects")


def decoded_lines(stream: Iterable[bytes], name: str) -> Iterator[tuple[int, str]]:
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
            fail(
                f"{name}:{number}",
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); {hint}",
            )


def no_prompts(name: str, saw_lines: bool) -> NoReturn:
    """Raise the error for a text file that held no prompts."""
    fail(name, "no prompts (only blank lines)" if saw_lines else "no prompts (file is empty)")
