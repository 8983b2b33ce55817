"""The interface every output format implements, and what the formats share.

Every format keeps a **key file** per shard: a Parquet file with a ``key`` column whose schema
metadata records the run's settings (:data:`~pixart_batch.schema.SHARD_SETTINGS_KEY`). For Parquet
the key file is the shard itself; other formats commit a small index beside each shard. So
committed keys, the settings guard's fallback and the Ray anti-join read the same way for every format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ... import schema as S
from ...errors import first_line
from ...storage import Location, list_files

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Features

DATA_DIR = "data"
DATA_GLOB = f"{DATA_DIR}/**/*"
REWRITE_ROWS = 64
"""Rows :meth:`OutputFormat.rewrite` holds at a time for a format without row groups (images included)."""


@dataclass
class Damaged:
    """A committed file that cannot be read whole (or is not one of ours)."""

    path: str
    reason: str


def check_parquet(location: Location, path: str, key_column: str) -> str | None:
    """Why a committed Parquet file cannot be used (None when it can): its footer, its schema's key
    column, and every value of that column must read. Cheap: the images are not decoded."""
    import pyarrow.parquet as pq

    try:
        with location.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            if key_column not in parquet.schema_arrow.names:
                return f"not a pixart-batch file (no '{key_column}' column)"
            keys = parquet.read(columns=[key_column])
            if keys.num_rows != parquet.metadata.num_rows:
                return f"{keys.num_rows} of {parquet.metadata.num_rows} rows readable"
    except Exception as exc:  # any failure to read is a finding
        return first_line(exc, with_type=True)
    return None


def find_damaged(location: Location, paths: list[str], check: Any) -> list[Damaged]:
    """The files among ``paths`` that ``check(path)`` rejects (read in parallel threads)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(check, paths))
    return [Damaged(path, reason) for path, reason in zip(paths, reasons, strict=True) if reason is not None]


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
    """One shard format of an output folder (``location``): every question about its shards goes here."""

    name: str
    suffix: str
    """The shard files' suffix (what the card's ``data_files`` glob matches)."""
    companion_suffixes: tuple[str, ...] = ()
    """Suffixes of the files this format commits beside each shard (owned by it, never shards)."""

    def __init__(self, location: Location, foreign_suffixes: tuple[str, ...] = ()) -> None:
        """``foreign_suffixes``: what the other registered formats' files end with (the registry
        passes them), so a shard of mine is never mistaken for another format's file."""
        self.location = location
        self.foreign_suffixes = tuple(
            s for s in foreign_suffixes if s != self.suffix and s.endswith(self.suffix)
        )

    def data_path(self, *parts: str) -> str:
        return self.location.join(DATA_DIR, *parts)

    # -- writing
    @abstractmethod
    def shard_name(self, run_id: str, task: int, number: int) -> str:
        """The shard's path under ``data/``: unique per run, task and shard number; at most 1000
        tasks' shards per folder (``datasets`` reads ``data/`` recursively)."""

    @abstractmethod
    def open_shard(
        self, name: str, settings: dict[str, Any] | None, row_group_size: int, schema: pa.Schema | None = None
    ) -> ShardWriter:
        """``schema``: the rows' Arrow schema when it is not :func:`~pixart_batch.schema.shard_schema`'s
        (``export`` copies another output's rows with their own columns); formats without one ignore it."""

    # -- reading
    def owns(self, path: str) -> bool:
        """Whether ``path`` is one of my shards (not a companion, not another format's file)."""
        return path.endswith(self.suffix) and not path.endswith(
            self.foreign_suffixes + self.companion_suffixes
        )

    def shard_files(self) -> list[str]:
        """The committed shards (sorted)."""
        return [
            path
            for path in list_files(self.location, self.data_path(), suffix=self.suffix)
            if self.owns(path)
        ]

    def detect(self) -> bool:
        """Whether the output holds shards of this format."""
        return bool(self.shard_files())

    @abstractmethod
    def key_files(self) -> list[str]:
        """One Parquet file with a ``key`` column per committed shard (see the module's docstring)."""

    def committed_keys(self) -> set[str]:
        """Keys of every readable key file (damaged shards are ``verify``'s and ``generate``'s business)."""
        return set(self.key_array().to_pylist())

    def key_array(self) -> pa.Array:
        """:meth:`committed_keys` as one Arrow string array (millions of keys without Python objects)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        chunks = []
        for path in self.key_files():
            try:
                with self.location.fs.open_input_file(path) as handle:
                    chunks += pq.read_table(handle, columns=[S.KEY]).column(0).chunks
            except Exception:
                continue
        return pa.chunked_array(chunks, pa.string()).combine_chunks()

    def key_file(self, shard: str) -> str:
        """The key file of the committed shard ``shard`` (the shard itself unless the format keeps an
        index)."""
        return shard

    def shard_of(self, key_file: str) -> str:
        """The shard whose key file is ``key_file`` (the inverse of :meth:`key_file`)."""
        return key_file

    @abstractmethod
    def check(self, path: str) -> str | None:
        """Why the committed shard ``path`` cannot be used (None when it can); cheap: no image decoded."""

    def find_damaged(self) -> list[Damaged]:
        """The committed shards :meth:`check` rejects."""
        return find_damaged(self.location, self.shard_files(), self.check)

    def companions(self, path: str) -> list[str]:
        """Files committed with the shard ``path`` (moved aside with it)."""
        return []

    def remove_uncommitted(self) -> int:
        """Delete what a run killed between a shard's commits left (never data); returns how many."""
        return 0

    @abstractmethod
    def read_rows(self, path: str) -> Iterator[dict[str, Any]]:
        """The rows of a shard as dicts of the output columns (``image`` as ``{"bytes", "path"}``)."""

    def row_groups(self, path: str, columns: list[str]) -> Iterator[tuple[int, Iterator[dict[str, Any]]]]:
        """``(group, rows)`` of a shard, with only ``columns`` of each row: a format that can read a part
        of a shard alone (Parquet row groups) gives several groups; the default is one group of every row."""
        yield 0, ({name: row.get(name) for name in columns} for row in self.read_rows(path))

    def rows_of_groups(
        self, path: str, groups: dict[int, set[str]], columns: list[str]
    ) -> Iterator[dict[str, Any]]:
        """The rows whose key is in ``groups[group]``, reading only those groups (see :meth:`row_groups`)."""
        wanted = set().union(*groups.values()) if groups else set()
        for row in self.read_rows(path):
            if row[S.KEY] in wanted:
                yield {name: row.get(name) for name in columns}

    # -- columns
    def columns(self, path: str) -> list[str]:
        """The column names the rows of the committed shard ``path`` carry (by default its first row's);
        raises ``ValueError`` (the reason) when :meth:`check` rejects the shard."""
        reason = self.check(path)
        if reason is not None:
            raise ValueError(reason)
        return list(next(iter(self.read_rows(path)), {}))

    def readable_columns(self, path: str, columns: list[str]) -> list[str]:
        """The ``columns`` that can be read from the shard ``path`` (a row without one reads it as
        missing); all of them by default: a row carries what it carries."""
        return list(columns)

    def features(self, path: str, labels: tuple[str, ...] | None) -> Features:
        """The ``datasets`` features of the shard's rows. By default a run's columns
        (:func:`~pixart_batch.schema.features`) plus what the first row carries beyond them: a ``ClassLabel``
        over ``labels`` for an integer ``label``, float32 for a score, the JSON value's type otherwise."""
        from datasets import ClassLabel, Features, Value

        first = next(iter(self.read_rows(path)), {})
        found = dict(S.features())
        for name, value in first.items():
            if name in found:
                continue
            if name == S.LABEL and labels and isinstance(value, int):
                found[name] = ClassLabel(names=list(labels))
            elif name in (S.CLIP_SCORE, S.AESTHETIC_SCORE):
                found[name] = Value("float32")
            elif isinstance(value, (bool, int, float, str)):
                kinds = {bool: "bool", int: "int64", float: "float64", str: "string"}
                found[name] = Value(kinds[type(value)])
        return Features(found)

    # -- rewriting
    def rewrite(
        self,
        path: str,
        settings: dict[str, Any],
        transform: Callable[[pa.Table], pa.Table],
        schema: pa.Schema,
    ) -> int:
        """The committed shard ``path`` again under the same name, its rows passed through ``transform``
        (a table of the fields of ``schema`` that the rows carry, :data:`REWRITE_ROWS` rows at a time →
        a table of ``schema``), through the format's own :meth:`open_shard` writer with ``settings``:
        committed as a new shard is. Any exception aborts: the old shard stays. Returns its rows."""
        import pyarrow as pa

        writer = self.open_shard(path[len(self.data_path()) :].lstrip("/"), settings, REWRITE_ROWS, schema)
        rows = 0
        try:
            for batch in in_lists(self.read_rows(path), REWRITE_ROWS):
                carried = set().union(*batch)
                fields = pa.schema([field for field in schema if field.name in carried])
                writer.write(transform(pa.Table.from_pylist(batch, schema=fields)))
                rows += len(batch)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return rows

    # -- the card
    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """For the card: ``format`` (the name), ``data_files`` (the glob of ``configs``), ``features``
        (``dataset_info.features`` entries; empty when ``datasets`` infers them) and ``layout`` (one
        Markdown sentence on the shards' layout)."""

    def card_features(self, features: Features) -> list[dict[str, Any]] | None:
        """The card's ``dataset_info.features`` entries for rows of ``features`` (None: ``datasets``
        infers this format's features from its files)."""
        return None


def in_lists(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """``rows`` in lists of ``size`` (the last one shorter): what a streaming copy holds at a time."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
