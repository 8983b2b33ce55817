"""File systems and atomic commits (pyarrow.fs): local paths, ``s3://``, ``gs://``.

A file becomes visible whole or not at all:
- local disk: written to ``.tmp-<uuid>-<name>`` beside its final name, then renamed
  (POSIX rename is atomic); readers skip names starting with ``.`` or ``_``;
- object stores: written directly to the final key; an object PUT (or a multipart
  upload) becomes visible only when complete, so no partial object is ever listed.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Location:
    """A directory on some file system: ``fs`` is a ``pyarrow.fs.FileSystem``, ``path`` its path there."""

    fs: object
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        from pyarrow import fs

        return isinstance(self.fs, fs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def child(self, *parts: str) -> Location:
        sep = "" if self.uri.endswith("/") else "/"
        return Location(self.fs, self.join(*parts), self.uri + sep + "/".join(parts))


def locate(uri: str) -> Location:
    """Resolve a local path or ``scheme://`` URI to a :class:`Location`."""
    import os

    from pyarrow import fs

    if "://" in uri and not uri.startswith("file://"):
        filesystem, path = fs.FileSystem.from_uri(uri)
        return Location(filesystem, path.rstrip("/"), uri.rstrip("/"))
    local = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
    return Location(fs.LocalFileSystem(), local, local)


def is_file(loc: Location, path: str) -> bool:
    from pyarrow import fs

    return loc.fs.get_file_info(path).type == fs.FileType.File


def makedirs(loc: Location, path: str) -> None:
    loc.fs.create_dir(path, recursive=True)


def read_bytes(loc: Location, path: str) -> bytes:
    with loc.fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes_atomic(loc: Location, path: str, data: bytes, before_commit: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file, or the new one whole.

    ``before_commit`` runs between writing the temporary file and renaming it (tests use it).
    """
    parent, name = posixpath.split(path)
    if not loc.is_local:
        with loc.fs.open_output_stream(path) as stream:
            stream.write(data)
        return
    makedirs(loc, parent)
    tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")
    try:
        with loc.fs.open_output_stream(tmp) as stream:
            stream.write(data)
        _fsync(tmp)
        if before_commit is not None:
            before_commit()
        loc.fs.move(tmp, path)
    except BaseException:
        _remove_quietly(loc, tmp)
        raise


def write_parquet_atomic(
    loc: Location, path: str, table, row_group_size: int | None = None, before_commit: Callable[[], None] | None = None, **options
) -> int:
    """Write a Parquet file atomically; returns its size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size, **options)
    data = sink.getvalue().to_pybytes()
    write_bytes_atomic(loc, path, data, before_commit)
    return len(data)


def list_files(loc: Location, path: str, suffix: str = "", recursive: bool = True) -> list[str]:
    """Committed files under ``path`` (sorted), skipping temporaries and hidden names."""
    from pyarrow import fs

    selector = fs.FileSelector(path, recursive=recursive, allow_not_found=True)
    found = []
    for info in loc.fs.get_file_info(selector):
        if info.type != fs.FileType.File or not info.path.endswith(suffix):
            continue
        relative = posixpath.relpath(info.path, path)
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        found.append(info.path)
    return sorted(found)


def remove_temporaries(loc: Location, path: str, older_than_s: float = 0.0) -> int:
    """Delete leftover ``.tmp-*`` files of crashed writers under ``path``; returns how many.

    ``older_than_s`` spares recent ones (a store shared by several outputs may have a live
    writer of another run).
    """
    import time

    from pyarrow import fs

    removed = 0
    for info in loc.fs.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type != fs.FileType.File or not posixpath.basename(info.path).startswith(TMP_PREFIX):
            continue
        if older_than_s and info.mtime is not None and time.time() - info.mtime.timestamp() < older_than_s:
            continue
        _remove_quietly(loc, info.path)
        removed += 1
    return removed


def _remove_quietly(loc: Location, path: str) -> None:
    try:
        loc.fs.delete_file(path)
    except OSError:
        pass


def _fsync(path: str) -> None:
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
