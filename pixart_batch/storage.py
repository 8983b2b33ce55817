"""File systems and atomic commits (pyarrow.fs): local paths, ``s3://``, ``gs://``.

A file becomes visible whole or not at all:
- local disk: written to ``.tmp-<uuid>-<name>`` beside its final name, then renamed
  (POSIX rename is atomic); readers skip names starting with ``.`` or ``_``;
- object stores: written directly to the final key; an object PUT (or a multipart
  upload) becomes visible only when complete, so no partial object is ever listed.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from pyarrow.fs import FileSystem

TMP_PREFIX = ".tmp-"
TMP_NAME = re.compile(r"^\.tmp-[0-9a-f]{12}-.+")
"""Exactly the temporaries :func:`write_bytes_atomic` names; nothing else is ever removed as one."""
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StorageFullError(OSError):
    """The output's storage is full (ENOSPC / quota): reported as one line, the partial file removed."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class Location:
    """A directory on some file system: ``fs`` is a ``pyarrow.fs.FileSystem``, ``path`` its path there."""

    fs: FileSystem
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
        try:
            filesystem, path = fs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as exc:
            from .errors import UserError

            text = str(exc).strip().splitlines()
            raise UserError(
                f"{uri}: cannot open this location ({text[0] if text else type(exc).__name__})"
            ) from None
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


def read_json_object(loc: Location, path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object (a probe:
    callers that must refuse garbage read and validate the file themselves)."""
    import json

    if not is_file(loc, path):
        return None
    try:
        data = json.loads(read_bytes(loc, path))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def write_bytes_atomic(
    loc: Location, path: str, data: bytes, before_commit: Callable[[], None] | None = None
) -> None:
    """Write ``data`` to ``path`` so that readers see the old file, or the new one whole.

    ``before_commit`` runs between writing the temporary file and renaming it (tests use it).
    """
    from .faults import inject_full_disk

    parent, name = posixpath.split(path)
    if not loc.is_local:
        try:
            inject_full_disk(name)
            with loc.fs.open_output_stream(path) as stream:
                stream.write(data)
        except OSError as exc:
            _as_disk_full(exc, loc, path)
            raise
        return
    makedirs(loc, parent)
    tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")
    try:
        with loc.fs.open_output_stream(tmp) as stream:
            stream.write(data[: len(data) // 2])
            inject_full_disk(name)  # fault injection: a disk that fills up mid-file
            stream.write(data[len(data) // 2 :])
        _fsync(tmp)
        if before_commit is not None:
            before_commit()
        loc.fs.move(tmp, path)
    except BaseException as exc:
        _remove_quietly(loc, tmp)
        if isinstance(exc, OSError):
            _as_disk_full(exc, loc, path)
        raise


def _as_disk_full(exc: OSError, loc: Location, path: str) -> None:
    """Turn "no space left" (however the file system reports it) into one :class:`StorageFullError`."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in FULL_ERRNOS or "No space left on device" in text or "Disk quota exceeded" in text:
        raise StorageFullError(
            errno.ENOSPC,
            f"{loc.uri}: no space left on the device (or quota exceeded) while writing {posixpath.basename(path)}; "
            "nothing partial was kept — free space and re-run the same command to resume",
        ) from None


def write_parquet_atomic(
    loc: Location,
    path: str,
    table: pa.Table,
    row_group_size: int | None = None,
    before_commit: Callable[[], None] | None = None,
    **options: Any,
) -> int:
    """Write a Parquet file atomically; returns its size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size, **options)
    data = sink.getvalue().to_pybytes()
    write_bytes_atomic(loc, path, data, before_commit)
    return len(data)


class ParquetStreamWriter:
    """Writes a Parquet file row group by row group, committed as :func:`write_parquet_atomic` commits
    one: visible under ``path`` whole, or not at all.

    - local disk: streamed into ``.tmp-<uuid>-<name>`` beside ``path``, then fsynced and renamed;
    - object stores: streamed into a local temporary file, uploaded to ``path`` on :meth:`commit`
      (an object PUT is visible only once complete; pyarrow cannot abort a streamed multipart upload,
      so nothing is streamed there before the file is whole).

    Memory does not grow with the file: only the row groups being written are held. Any failure
    (:meth:`write`, :meth:`commit`, or leaving a ``with`` block by an exception) removes the
    temporary file; a full disk raises :class:`StorageFullError`.
    """

    def __init__(
        self,
        loc: Location,
        path: str,
        schema: pa.Schema,
        before_commit: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        import tempfile

        import pyarrow as pa
        import pyarrow.parquet as pq

        self.loc, self.path, self.before_commit = loc, path, before_commit
        parent, self.name = posixpath.split(path)
        self.closed = False
        try:
            if loc.is_local:
                makedirs(loc, parent)
                self.tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{self.name}")
                self._stream = loc.fs.open_output_stream(self.tmp)
            else:
                fd, self.tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{self.name}")
                os.close(fd)
                self._stream = pa.OSFile(self.tmp, "wb")
            self._writer = pq.ParquetWriter(self._stream, schema, **options)
        except BaseException as exc:
            self._fail(exc)
            raise

    def write(self, table: pa.Table, row_group_size: int | None = None) -> None:
        """Append ``table`` as row groups of at most ``row_group_size`` rows (one per call when None)."""
        try:
            self._writer.write_table(table, row_group_size=row_group_size)
        except BaseException as exc:
            self._fail(exc)
            raise

    def commit(self) -> int:
        """Finish the file and make it visible under its final name; returns its size in bytes."""
        from .faults import inject_full_disk

        try:
            self._writer.close()
            self._stream.close()
            inject_full_disk(self.name)  # fault injection: a disk that fills up as the file completes
            size = os.path.getsize(self.tmp)  # local either way: the temporary or the spill file
            if self.loc.is_local:
                _fsync(self.tmp)
                if self.before_commit is not None:
                    self.before_commit()
                self.loc.fs.move(self.tmp, self.path)
            else:
                if self.before_commit is not None:
                    self.before_commit()
                with open(self.tmp, "rb") as source, self.loc.fs.open_output_stream(self.path) as target:
                    while chunk := source.read(8 << 20):
                        target.write(chunk)
                os.remove(self.tmp)
            self.closed = True
            return int(size)
        except BaseException as exc:
            self._fail(exc)
            raise

    def abort(self) -> None:
        """Drop the file: nothing appears under ``path`` (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for part in (getattr(self, "_writer", None), getattr(self, "_stream", None)):
            try:
                if part is not None:
                    part.close()
            except Exception:
                pass
        if not hasattr(self, "tmp"):
            return
        if self.loc.is_local:
            _remove_quietly(self.loc, self.tmp)
        else:
            try:
                os.remove(self.tmp)
            except OSError:
                pass

    def _fail(self, exc: BaseException) -> None:
        self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, StorageFullError):
            _as_disk_full(exc, self.loc, self.path)

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None:
            self.abort()


NESTED_ROOT_FILES = (".pixart-batch", "store.json")
"""Files that make their folder someone else's: another output's marker (``ownership.MARKER_FILE``), an
output's store pointer or an embedding store's identity. A folder below the one listed that holds one is
another output or store nested there: :func:`list_files` never lists its files, so nothing this tool does
to what it lists (quarantine, reading shards or parts) reaches them."""


def list_files(loc: Location, path: str, suffix: str = "", recursive: bool = True) -> list[str]:
    """Committed files under ``path`` (sorted), skipping temporaries, hidden names and the files of
    outputs or stores nested below ``path`` (:data:`NESTED_ROOT_FILES`); locally, no symbolic link is
    followed."""
    found = []
    for file_path, _ in _own_files(loc, path):
        if not file_path.endswith(suffix):
            continue
        relative = posixpath.relpath(file_path, path)
        if not recursive and "/" in relative:
            continue
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        found.append(file_path)
    return sorted(found)


def nested_roots(loc: Location, path: str) -> list[str]:
    """Folders below ``path`` that hold another output or store (:data:`NESTED_ROOT_FILES`), outermost only."""
    return _nested_roots(path, [file_path for file_path, _ in _walk_files(loc, path)])


def _nested_roots(path: str, files: list[str]) -> list[str]:
    roots = sorted(
        {
            posixpath.dirname(file_path)
            for file_path in files
            if "/" in posixpath.relpath(file_path, path)
            and posixpath.basename(file_path) in NESTED_ROOT_FILES
        }
    )
    return [root for root in roots if not any(root.startswith(other + "/") for other in roots)]


def _own_files(loc: Location, path: str) -> list[tuple[str, float | None]]:
    """:func:`_walk_files` without the files of outputs and stores nested below ``path``."""
    files = list(_walk_files(loc, path))
    nested = tuple(root + "/" for root in _nested_roots(path, [file_path for file_path, _ in files]))
    return (
        [(file_path, mtime) for file_path, mtime in files if not file_path.startswith(nested)]
        if nested
        else files
    )


def remove_temporaries(
    loc: Location,
    path: str,
    older_than_s: float = 0.0,
    recursive: bool = True,
    only: set[str] | None = None,
    keep: tuple[str, ...] = (),
) -> int:
    """Delete leftover temporaries of crashed writers under ``path``; returns how many.

    Only files named exactly as :func:`write_bytes_atomic` names them (``.tmp-<12 hex>-<name>``)
    are removed, never inside an output or store nested below ``path``, and on a local disk no
    symbolic link is followed or removed: whatever a link points to is not this tool's.
    ``older_than_s`` spares recent ones (a store shared by several outputs may have a live writer of
    another run). ``recursive=False``: only directly in ``path``; ``only``: the final paths whose
    temporaries may go (a temporary of another name is left); ``keep``: paths never removed (the
    run's inputs), compared after resolving links locally.
    """
    import time

    kept = {_resolved(loc, p) for p in keep}
    removed = 0
    for file_path, mtime in _own_files(loc, path):
        parent, name = posixpath.split(file_path)
        if not TMP_NAME.match(name) or (not recursive and parent.rstrip("/") != path.rstrip("/")):
            continue
        if only is not None and posixpath.join(parent, name[len(TMP_PREFIX) + 13 :]) not in only:
            continue
        if _resolved(loc, file_path) in kept:
            continue
        if older_than_s and mtime is not None and time.time() - mtime < older_than_s:
            continue
        _remove_quietly(loc, file_path)
        removed += 1
    return removed


def _resolved(loc: Location, path: str) -> str:
    import os

    return os.path.realpath(path) if loc.is_local else path


def _walk_files(loc: Location, path: str) -> Iterator[tuple[str, float | None]]:
    """``(path, mtime)`` of the regular files under ``path``; locally, symbolic links are neither
    followed nor listed."""
    import os

    if loc.is_local:
        for root, dirs, files in os.walk(path, followlinks=False):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            for name in files:
                full = os.path.join(root, name)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                yield full, os.lstat(full).st_mtime
        return
    from pyarrow import fs

    for info in loc.fs.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type == fs.FileType.File:
            yield info.path, info.mtime.timestamp() if info.mtime is not None else None


def remove_tree(loc: Location, path: str) -> None:
    """Remove a folder this tool made (``.work/<run>``, an old plan); a symbolic link in its place is
    unlinked, never followed. Missing is fine."""
    import os
    import shutil

    if loc.is_local:
        if os.path.islink(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        return
    try:
        loc.fs.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass


def move_aside(loc: Location, path: str, target: str) -> None:
    """Move a committed file out of the dataset (to quarantine): a rename locally, copy + delete on
    object stores (which have no rename); the file is never deleted without its copy."""
    makedirs(loc, posixpath.dirname(target))
    if loc.is_local:
        loc.fs.move(path, target)
        return
    loc.fs.copy_file(path, target)
    loc.fs.delete_file(path)


def is_symlink(loc: Location, path: str) -> bool:
    import os

    return loc.is_local and os.path.islink(path)


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


def spill_path(loc: Location, path: str) -> str:
    """A temporary local file to build ``path`` in before :func:`publish_file` commits it: beside the
    target on a local disk (same file system, so the commit is a rename), a local spill file for an object store."""
    import os
    import tempfile

    parent, name = posixpath.split(path)
    if loc.is_local:
        makedirs(loc, parent)
        return posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{name}")
    os.close(fd)
    return tmp


def publish_file(loc: Location, tmp: str, path: str, before_commit: Callable[[], None] | None = None) -> None:
    """Commit the finished file ``tmp`` (from :func:`spill_path`) as ``path``, atomically: fsync and rename
    on a local disk; one upload of the whole file to an object store (an object appears whole or not at all)."""
    import os

    if loc.is_local:
        _fsync(tmp)
        if before_commit is not None:
            before_commit()
        loc.fs.move(tmp, path)
        return
    if before_commit is not None:
        before_commit()
    with open(tmp, "rb") as source, loc.fs.open_output_stream(path) as target:
        while chunk := source.read(8 << 20):
            target.write(chunk)
    os.remove(tmp)


def discard_spill(loc: Location, tmp: str) -> None:
    """Remove a :func:`spill_path` file that will not be committed (quietly: it may be gone)."""
    import os

    try:
        if loc.is_local:
            loc.fs.delete_file(tmp)
        else:
            os.remove(tmp)
    except OSError:
        pass
