"""Atomic commits: a file becomes visible whole or not at all.

- local disk: written to ``.tmp-<uuid>-<name>`` beside its final name, then fsynced and renamed
  (POSIX rename is atomic); readers skip names starting with ``.`` or ``_``;
- object stores: written directly to the final key; an object PUT (or a multipart
  upload) becomes visible only when complete, so no partial object is ever listed.

A full disk (however the file system reports it) is one :class:`StorageFullError`, the partial file
removed. Files written whole in memory use :func:`write_bytes_atomic` / :func:`write_parquet_atomic`;
files streamed row group by row group :class:`ParquetStreamWriter`; files another library writes
to a path :func:`spill_path` then :func:`publish_file` (or :func:`discard_spill`).
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .locations import Location, makedirs, remove_quietly

if TYPE_CHECKING:
    import pyarrow as pa

TMP_PREFIX = ".tmp-"
TMP_NAME = re.compile(r"^\.tmp-[0-9a-f]{12}-.+")
"""Exactly the temporaries :func:`write_bytes_atomic` names; nothing else is ever removed as one."""
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StorageFullError(OSError):
    """The output's storage is full (ENOSPC / quota): reported as one line, the partial file removed."""

    def __str__(self) -> str:
        return str(self.strerror)


def temporary_name(parent: str, name: str) -> str:
    """The temporary beside ``parent/name`` that a local commit renames (matches :data:`TMP_NAME`)."""
    return posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def write_bytes_atomic(
    loc: Location, path: str, data: bytes, before_commit: Callable[[], None] | None = None
) -> None:
    """Write ``data`` to ``path`` so that readers see the old file, or the new one whole.

    ``before_commit`` runs between writing the temporary file and renaming it (tests use it).
    """
    from ..faults import inject_full_disk

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
    tmp = temporary_name(parent, name)
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
        remove_quietly(loc, tmp)
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
            f"{loc.uri}: no space left on the device (or quota exceeded) while writing "
            f"{posixpath.basename(path)}; nothing partial was kept — free space and re-run the same "
            "command to resume",
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
                self.tmp = temporary_name(parent, self.name)
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
        from ..faults import inject_full_disk

        try:
            self._writer.close()
            self._stream.close()
            inject_full_disk(self.name)  # fault injection: a disk that fills up as the file completes
            size = os.path.getsize(self.tmp)  # local either way: the temporary or the spill file
            publish_file(self.loc, self.tmp, self.path, self.before_commit)
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
        if hasattr(self, "tmp"):
            discard_spill(self.loc, self.tmp)

    def _fail(self, exc: BaseException) -> None:
        self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, StorageFullError):
            _as_disk_full(exc, self.loc, self.path)

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None:
            self.abort()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spill_path(loc: Location, path: str) -> str:
    """A temporary local file to build ``path`` in before :func:`publish_file` commits it: beside the
    target on a local disk (same file system, so the commit is a rename), a local spill file for an
    object store."""
    import tempfile

    parent, name = posixpath.split(path)
    if loc.is_local:
        makedirs(loc, parent)
        return temporary_name(parent, name)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{name}")
    os.close(fd)
    return tmp


def publish_file(loc: Location, tmp: str, path: str, before_commit: Callable[[], None] | None = None) -> None:
    """Commit the finished file ``tmp`` (from :func:`spill_path`) as ``path``, atomically: fsync and
    rename on a local disk; one upload of the whole file to an object store (an object appears whole
    or not at all)."""
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
    try:
        if loc.is_local:
            loc.fs.delete_file(tmp)
        else:
            os.remove(tmp)
    except OSError:
        pass
