"""``output.format: parquet`` (default): ``data/<run>/<task//1000>/train-<run>-<task>-<n>.parquet``,
the rows of :func:`~pixart_batch.schema.features` (``image`` a datasets Image)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ... import schema as S
from ...faults import stall
from ...storage import ParquetStreamWriter
from .base import DATA_GLOB, OutputFormat, ShardWriter, check_parquet

if TYPE_CHECKING:
    import pyarrow as pa


class ParquetFormat(OutputFormat):
    name = "parquet"
    suffix = ".parquet"

    def shard_name(self, run_id: str, task: int, number: int) -> str:
        # The name alone is unique too, so shards can be copied flat.
        return f"{run_id}/{task // 1000:04d}/train-{run_id}-{task:05d}-{number:04d}.parquet"

    def open_shard(
        self, name: str, settings: dict[str, Any] | None, row_group_size: int, schema: pa.Schema | None = None
    ) -> ShardWriter:
        writer = ParquetStreamWriter(
            self.location,
            self.data_path(name),
            S.shard_schema(settings) if schema is None else S.with_settings(schema, settings),
            before_commit=lambda: stall("shard-commit"),
            compression="zstd",
        )
        return _ParquetShard(writer, row_group_size)

    def key_files(self) -> list[str]:
        return self.shard_files()

    def check(self, path: str) -> str | None:
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

    def row_groups(self, path: str, columns: list[str]) -> Iterator[tuple[int, Iterator[dict[str, Any]]]]:
        import pyarrow.parquet as pq

        with self.location.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            for index in range(parquet.metadata.num_row_groups):
                yield index, iter(parquet.read_row_group(index, columns=columns).to_pylist())

    def rows_of_groups(self, path: str, groups: dict[int, set[str]], columns: list[str]) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        with self.location.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            for group, keys in sorted(groups.items()):
                table = parquet.read_row_group(group, columns=columns)
                table = table.filter(pc.is_in(table.column(S.KEY), value_set=pa.array(sorted(keys), pa.string())))
                yield from table.to_pylist()

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.name,
            "data_files": f"{DATA_GLOB}{self.suffix}",
            "features": card_features(),
            "layout": "Parquet shards (`data/<run>/<task//1000>/train-*.parquet`), one row per image.",
        }


def card_features() -> list[dict[str, Any]]:
    """The card's ``dataset_info.features`` of a Parquet row (the YAML the Hub and ``datasets`` read)."""
    entries = []
    for name, feature in S.features().items():
        inner = getattr(feature, "feature", None)
        if name == S.IMAGE:
            entries.append({"name": name, "dtype": "image"})
        elif inner is not None:  # a list of values
            entries.append({"name": name, "list": inner.dtype})
        else:
            entries.append({"name": name, "dtype": feature.dtype})
    return entries


class _ParquetShard(ShardWriter):
    """A Parquet shard: rows buffered up to one row group, each full row group streamed to the
    :class:`~pixart_batch.storage.ParquetStreamWriter`."""

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
