"""Output formats: how image rows become committed shards under ``OUTPUT/data/``, and how a run
learns which keys are already committed.

Resume (both executors' anti-join), ``status``, ``verify``, the damaged-shard check and the card
go through :class:`OutputFormat` only. Every format keeps a **key file** per shard: a Parquet file
with a ``key`` column whose schema metadata records the run's settings
(:data:`~.dataset.SHARD_SETTINGS_KEY`). For Parquet the key file is the shard itself; for
WebDataset it is a small index committed beside the tar. So committed keys, the settings guard's
fallback and the Ray anti-join (``ray.data.read_parquet(format.key_files())``) read the same way for
every format.

Formats (``output.format``):

- ``parquet`` (default): ``data/<run>/<task//1000>/train-<run>-<task>-<n>.parquet``, the rows of
  :func:`~.dataset.features` (``image`` a datasets Image);
- ``webdataset``: ``data/<run>/<task//1000>/<task:05d><n:04d>.tar`` (img2dataset's numbering, one
  folder per run so names never collide), members ``KEY.png|jpg|webp`` (the image), ``KEY.json``
  (every other column of the row) and ``KEY.txt`` (the ``caption`` column: the text the model was
  conditioned on). Keys are ``<prompt_id>-<nnnnn>`` and prompt ids are ``[A-Za-z0-9_-]``
  (:mod:`.prompts`), so a key never holds the ``.`` at which WebDataset splits member names.

  **Atomicity.** The key index ``<name>.keys.parquet`` is committed first, the tar second (each
  atomically); the tar's appearance is the commit. A reader of ``data/**/*.tar`` therefore never
  sees a tar whose keys a resume would plan again. A run killed between the two commits leaves an
  index without its tar: its keys are not committed (:meth:`OutputFormat.key_files` skips it) and
  the next run removes it (:meth:`OutputFormat.remove_uncommitted`). A tar without its index, or
  whose members disagree with it, or that is truncated, is damaged: set aside with its index.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import schema as S
from .faults import stall
from .storage import TMP_PREFIX, Location, ParquetStreamWriter, list_files, makedirs, write_parquet_atomic

if TYPE_CHECKING:
    import pyarrow as pa

    from .dataset import Damaged, OutputDataset

DATA_GLOB = "data/**/*"
IMAGE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
"""``output.image_format`` → the WebDataset member extension (the decoders' names)."""


class ShardWriter(ABC):
    """One shard being written: :meth:`write` row batches (tables of the output schema), then
    :meth:`commit` (atomic; returns the bytes committed) or :meth:`abort` (nothing appears)."""

    @abstractmethod
    def write(self, table: pa.Table) -> None: ...

    @abstractmethod
    def commit(self) -> int: ...

    @abstractmethod
    def abort(self) -> None: ...


class OutputFormat(ABC):
    """One shard format of an :class:`~.dataset.OutputDataset`."""

    name: str
    suffix: str
    """The shard files' suffix (what the card's ``data_files`` glob matches)."""

    def __init__(self, output: OutputDataset) -> None:
        self.output = output
        self.location: Location = output.location

    # -- writing
    @abstractmethod
    def shard_name(self, run_id: str, task: int, number: int) -> str:
        """The shard's path under ``data/``: unique per run, task and shard number; at most 1000
        tasks' shards per folder (``datasets`` reads ``data/`` recursively)."""

    @abstractmethod
    def open_shard(self, name: str, settings: dict[str, Any] | None, row_group_size: int) -> ShardWriter: ...

    # -- reading
    def shard_files(self) -> list[str]:
        """The committed shards (sorted)."""
        return [path for path in list_files(self.location, self.output.data_path(), suffix=self.suffix) if self.owns(path)]

    def owns(self, path: str) -> bool:
        return True

    @abstractmethod
    def key_files(self) -> list[str]:
        """One Parquet file with a ``key`` column per committed shard (see the module's docstring)."""

    def committed_keys(self) -> set[str]:
        """Keys of every readable key file (damaged shards are ``verify``'s and ``generate``'s business)."""
        import pyarrow.parquet as pq

        keys: set[str] = set()
        for path in self.key_files():
            try:
                with self.location.fs.open_input_file(path) as handle:
                    keys.update(pq.read_table(handle, columns=[S.KEY]).column(0).to_pylist())
            except Exception:
                continue
        return keys

    @abstractmethod
    def check(self, path: str) -> str | None:
        """Why the committed shard ``path`` cannot be used (None when it can); cheap: no image decoded."""

    def find_damaged(self) -> list[Damaged]:
        """The committed shards :meth:`check` rejects (read in parallel threads)."""
        from concurrent.futures import ThreadPoolExecutor

        from .dataset import Damaged

        paths = self.shard_files()
        with ThreadPoolExecutor(max_workers=8) as pool:
            reasons = list(pool.map(self.check, paths))
        return [Damaged(path, reason) for path, reason in zip(paths, reasons, strict=True) if reason is not None]

    def companions(self, path: str) -> list[str]:
        """Files committed with the shard ``path`` (moved aside with it)."""
        return []

    def quarantine(self, damaged: Damaged, run_id: str) -> str:
        """Move a damaged shard and its companions to ``quarantine/<run>/``; returns where the shard went."""
        from .dataset import Damaged
        from .storage import is_file

        target = self.output.quarantine(damaged, run_id)
        for path in self.companions(damaged.path):
            if is_file(self.location, path):
                self.output.quarantine(Damaged(path, f"committed with {damaged.path}: {damaged.reason}"), run_id)
        return target

    def remove_uncommitted(self) -> int:
        """Delete what a run killed between a shard's commits left (never data); returns how many."""
        return 0

    @abstractmethod
    def read_rows(self, path: str) -> Iterator[dict[str, Any]]:
        """The rows of a shard as dicts of the output columns (``image`` as ``{"bytes", "path"}``)."""

    # -- the card
    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """For the card: ``format`` (the name), ``data_files`` (the glob of ``configs``), and
        ``features`` (``dataset_info.features`` entries; empty when ``datasets`` infers them)."""


class ParquetFormat(OutputFormat):
    name = "parquet"
    suffix = ".parquet"

    def shard_name(self, run_id: str, task: int, number: int) -> str:
        # The name alone is unique too, so shards can be copied flat.
        return f"{run_id}/{task // 1000:04d}/train-{run_id}-{task:05d}-{number:04d}.parquet"

    def owns(self, path: str) -> bool:
        return not path.endswith(WebDatasetFormat.index_suffix)

    def open_shard(self, name: str, settings: dict[str, Any] | None, row_group_size: int) -> ShardWriter:
        return _ParquetShard(self.output.open_shard(name, settings), row_group_size)

    def key_files(self) -> list[str]:
        return self.shard_files()

    def check(self, path: str) -> str | None:
        from .dataset import check_parquet

        return check_parquet(self.location, path, S.KEY)

    def read_rows(self, path: str) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        with self.location.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            missing = [c for c in S.OUTPUT_COLUMNS if c not in parquet.schema_arrow.names and c not in S.ADDED_COLUMNS]
            if missing:
                raise ValueError(f"missing columns {', '.join(missing)}")
            for batch in parquet.iter_batches(batch_size=64):  # a few images held at a time
                yield from batch.to_pylist()

    def describe(self) -> dict[str, Any]:
        from .dataset import card_features

        return {"format": self.name, "data_files": f"{DATA_GLOB}{self.suffix}", "features": card_features()}


class _ParquetShard(ShardWriter):
    """A Parquet shard: rows buffered up to one row group, each full row group streamed to the
    :class:`~.storage.ParquetStreamWriter`."""

    def __init__(self, writer: ParquetStreamWriter, row_group_size: int) -> None:
        self.writer, self.size = writer, row_group_size
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def write(self, table: pa.Table) -> None:
        import pyarrow as pa

        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.size:
            rows = pa.concat_tables(self.pending)
            full = (self.pending_rows // self.size) * self.size
            self.writer.write(rows.slice(0, full), row_group_size=self.size)
            self.pending = [rows.slice(full)] if full < self.pending_rows else []
            self.pending_rows -= full

    def commit(self) -> int:
        import pyarrow as pa

        if self.pending_rows:
            self.writer.write(pa.concat_tables(self.pending), row_group_size=self.size)
        return self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()


class WebDatasetFormat(OutputFormat):
    name = "webdataset"
    suffix = ".tar"
    index_suffix = ".keys.parquet"

    def shard_name(self, run_id: str, task: int, number: int) -> str:
        return f"{run_id}/{task // 1000:04d}/{task:05d}{number:04d}.tar"

    def index_of(self, tar: str) -> str:
        return tar[: -len(self.suffix)] + self.index_suffix

    def open_shard(self, name: str, settings: dict[str, Any] | None, row_group_size: int) -> ShardWriter:
        return _TarShard(self.location, self.output.data_path(name), self.index_of(self.output.data_path(name)), settings)

    def _listing(self) -> tuple[list[str], set[str]]:
        files = list_files(self.location, self.output.data_path())
        return [p for p in files if p.endswith(self.suffix)], {p for p in files if p.endswith(self.index_suffix)}

    def key_files(self) -> list[str]:
        tars, indexes = self._listing()
        return [self.index_of(tar) for tar in tars if self.index_of(tar) in indexes]

    def remove_uncommitted(self) -> int:
        tars, indexes = self._listing()
        orphans = indexes - {self.index_of(tar) for tar in tars}
        for path in orphans:
            self.location.fs.delete_file(path)
        return len(orphans)

    def companions(self, path: str) -> list[str]:
        return [self.index_of(path)]

    def _index_keys(self, tar: str) -> list[str]:
        import pyarrow.parquet as pq

        with self.location.fs.open_input_file(self.index_of(tar)) as handle:
            return [str(k) for k in pq.read_table(handle, columns=[S.KEY]).column(0).to_pylist()]

    def check(self, path: str) -> str | None:
        from .dataset import check_parquet
        from .errors import first_line
        from .storage import is_file

        index = self.index_of(path)
        if not is_file(self.location, index):
            return f"no key index ({posixpath.basename(index)})"
        reason = check_parquet(self.location, index, S.KEY)
        if reason:
            return f"unreadable key index: {reason}"
        try:
            keys = self._index_keys(path)
            with self.location.fs.open_input_file(path) as handle:
                size = handle.size()
                with tarfile.open(fileobj=handle, mode="r:") as tar:
                    members = tar.getmembers()
            for member in members:
                if member.offset_data + member.size > size:
                    return f"truncated ({member.name} ends past the file's {size} bytes)"
        except Exception as exc:
            return first_line(exc, with_type=True)
        found: dict[str, set[str]] = {}
        for member in members:
            key, _, extension = member.name.partition(".")
            found.setdefault(key, set()).add(extension)
        if sorted(found) != sorted(keys):
            return f"{len(found)} samples in the tar, {len(keys)} keys in its index"
        incomplete = [key for key, extensions in found.items() if not {"json", "txt"} <= extensions or len(extensions) != 3]
        if incomplete:
            return f"sample {incomplete[0]} lacks its image, .json or .txt"
        return None

    def read_rows(self, path: str) -> Iterator[dict[str, Any]]:
        """The tar's samples in order, one at a time (a sample's members are consecutive, as
        ``webdataset`` requires): memory holds one sample, whatever the shard's size."""

        def row_of(key: str, members: dict[str, bytes]) -> dict[str, Any]:
            row = json.loads(members.pop("json"))
            caption = members.pop("txt").decode()
            if caption != row.get(S.CAPTION):
                raise ValueError(f"{key}.txt differs from the caption in {key}.json")
            ((extension, blob),) = members.items()
            row[S.IMAGE] = {"bytes": blob, "path": f"{key}.{extension}"}
            return row

        current: str | None = None
        members: dict[str, bytes] = {}
        with self.location.fs.open_input_file(path) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                if key != current:
                    if current is not None:
                        yield row_of(current, members)
                    current, members = key, {}
                data = tar.extractfile(member)
                members[extension] = data.read() if data is not None else b""
        if current is not None:
            yield row_of(current, members)

    def describe(self) -> dict[str, Any]:
        # ``datasets``' webdataset builder infers the columns (__key__, __url__, png|jpg|webp, json, txt).
        return {"format": self.name, "data_files": f"{DATA_GLOB}{self.suffix}", "features": []}


class _TarShard(ShardWriter):
    """A tar streamed into a temporary file (beside the shard locally, a local spill file for object
    stores); :meth:`commit` commits the key index, then the tar (see the module's docstring)."""

    def __init__(self, loc: Location, path: str, index: str, settings: dict[str, Any] | None) -> None:
        import tempfile

        self.loc, self.path, self.index, self.settings = loc, path, index, settings
        self.keys: list[str] = []
        self.closed = False
        parent, name = posixpath.split(path)
        if loc.is_local:
            makedirs(loc, parent)
            self.tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")
        else:
            fd, self.tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{name}")
            os.close(fd)
        self.file = open(self.tmp, "wb")  # noqa: SIM115  # closed by commit/abort
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o444, 0
        self.tar.addfile(info, io.BytesIO(data))

    def write(self, table: pa.Table) -> None:
        try:
            for row in table.to_pylist():
                key = row.pop(S.KEY)
                image = row.pop(S.IMAGE)
                if "." in key or "/" in key:  # prompt ids are [A-Za-z0-9_-]: never happens
                    raise ValueError(f"key {key!r} cannot name a WebDataset sample")
                extension = IMAGE_EXTENSIONS[row[S.IMAGE_FORMAT]]
                self._add(f"{key}.{extension}", image["bytes"])
                self._add(f"{key}.json", json.dumps({S.KEY: key, **row}, sort_keys=True).encode())
                self._add(f"{key}.txt", (row[S.CAPTION] or "").encode())
                self.keys.append(key)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> int:
        import pyarrow as pa

        from .faults import raise_if_full
        from .storage import _fsync

        try:
            self.tar.close()
            self.file.close()
            raise_if_full(posixpath.basename(self.path))
            size = os.path.getsize(self.tmp)
            schema = pa.schema([(S.KEY, pa.string())])
            if self.settings is not None:
                from .dataset import SHARD_SETTINGS_KEY

                schema = schema.with_metadata({SHARD_SETTINGS_KEY: json.dumps(self.settings, sort_keys=True).encode()})
            write_parquet_atomic(self.loc, self.index, pa.table({S.KEY: self.keys}, schema=schema))
            if self.loc.is_local:
                _fsync(self.tmp)
                stall("shard-commit")
                self.loc.fs.move(self.tmp, self.path)
            else:
                stall("shard-commit")
                with open(self.tmp, "rb") as source, self.loc.fs.open_output_stream(self.path) as target:
                    while chunk := source.read(8 << 20):
                        target.write(chunk)
                os.remove(self.tmp)
            self.closed = True
            return int(size)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for part in (self.tar, self.file):
            try:
                part.close()
            except Exception:
                pass
        try:
            if self.loc.is_local:
                self.loc.fs.delete_file(self.tmp)
            else:
                os.remove(self.tmp)
        except OSError:
            pass


FORMATS: dict[str, type[OutputFormat]] = {"parquet": ParquetFormat, "webdataset": WebDatasetFormat}
"""``output.format`` → its :class:`OutputFormat`."""
