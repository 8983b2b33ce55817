"""Opening one input file (a prompt file) by local path or ``scheme://`` URI: regular files only, so a
FIFO or a device never blocks the run; file systems through :mod:`pixart_batch.storage`'s locations."""

from __future__ import annotations

import os
from typing import Any

from .storage import Location


def is_uri(text: str) -> bool:
    """Whether ``text`` names an object-store (or other ``scheme://``) location rather than a local path."""
    return "://" in text and not text.startswith("file://")


def locate_file(uri: str) -> Location:
    """A :class:`Location` for one file (``path`` is the file; ``uri`` as given, less ``file://``).

    Unlike :func:`locate`, a URI that cannot be resolved raises pyarrow's own error (``OSError`` or
    ``ValueError``), and a local path is not user-expanded, so callers word the message themselves.
    """

    from pyarrow import fs

    if is_uri(uri):
        filesystem, path = fs.FileSystem.from_uri(uri)
        return Location(filesystem, path, uri)
    local = uri.removeprefix("file://")
    return Location(fs.LocalFileSystem(), os.path.abspath(local), local)


class NotRegularFileError(OSError):
    """:func:`open_regular` refused a path before reading it; ``kind`` says what it is: ``"missing"``
    (object stores), ``"directory"``, ``"not a file or object"`` (object stores), or, locally, "a named
    pipe (FIFO)", "a character device", "a block device", "a socket" or "not a regular file"."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _local_kind(mode: int) -> str | None:
    import stat

    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "directory"
    tests = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((text for test, text in tests if test(mode)), "not a regular file")


def open_regular(loc: Location, seekable: bool = False) -> tuple[Any, int | None, int | None]:
    """Open the file ``loc`` (from :func:`locate_file`) for binary reading, never a FIFO or device.

    Returns ``(stream, size, mtime_ns)``: locally an unbuffered ``io.FileIO`` (``mtime_ns`` None),
    opened only once ``stat`` says it is a regular file (non-blocking, so a FIFO swapped in after the
    ``stat`` cannot hang either, then checked again); for a URI a pyarrow stream, or with ``seekable`` a
    random-access file. Raises :class:`NotRegularFileError`, or the ``OSError`` (locally) / ``OSError`` or
    ``ValueError`` (URIs) of the failed call.
    """
    import io

    if is_uri(loc.uri):
        from pyarrow import fs

        info = loc.fs.get_file_info(loc.path)
        if info.type == fs.FileType.NotFound:
            raise NotRegularFileError("missing")
        if info.type == fs.FileType.Directory:
            raise NotRegularFileError("directory")
        if info.type != fs.FileType.File:
            raise NotRegularFileError("not a file or object")
        stream = loc.fs.open_input_file(loc.path) if seekable else loc.fs.open_input_stream(loc.path)
        return stream, info.size, info.mtime_ns
    name = loc.uri
    if (kind := _local_kind(os.stat(name).st_mode)) is not None:
        raise NotRegularFileError(kind)
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(name, os.O_RDONLY | nonblocking | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if (kind := _local_kind(info.st_mode)) is not None:
            raise NotRegularFileError(kind)
        if nonblocking:
            os.set_blocking(fd, True)
        return io.FileIO(fd, "rb"), info.st_size, None
    except BaseException:
        os.close(fd)
        raise
