"""``output.format: parquet`` (default): ``data/<run>/<task//1000>/train-<run>-<task>-<n>.parquet``,
the rows of :func:`~pixart_batch.schema.features` (``image`` a datasets Image)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ... import schema as S
from ...faults import stall
from ...storage import ParquetStreamWriter
from .base import DATA_GLOB, OutputFormat, ShardWriter, check_parquet

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Features


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
            missing = [
                c
                for c in S.OUTPUT_COLUMNS
                if c not in parquet.schema_arrow.names and c not in S.ADDED_COLUMNS
            ]
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

    def rows_of_groups(
        self, path: str, groups: dict[int, set[str]], columns: list[str]
    ) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        with self.location.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            for group, keys in sorted(groups.items()):
                table = parquet.read_row_group(group, columns=columns)
                table = table.filter(
                    pc.is_in(table.column(S.KEY), value_set=pa.array(sorted(keys), pa.string()))
                )
                yield from table.to_pylist()

    def _schema(self, path: str) -> pa.Schema:
        import pyarrow.parquet as pq

        with self.location.fs.open_input_file(path) as handle:
            return pq.ParquetFile(handle).schema_arrow

    def columns(self, path: str) -> list[str]:
        reason = self.check(path)
        if reason is not None:
            raise ValueError(reason)
        return list(self._schema(path).names)

    def readable_columns(self, path: str, columns: list[str]) -> list[str]:
        """A shard written before a column existed lacks it: its rows read it as missing."""
        names = set(self._schema(path).names)
        return [name for name in columns if name in names]

    def features(self, path: str, labels: tuple[str, ...] | None) -> Features:
        """The shard's own features (its ``huggingface`` metadata, or its Arrow schema; ``label`` keeps
        the names it records), plus the columns added since older shards were written, ``image`` last."""
        from datasets import Features

        own = Features.from_arrow_schema(self._schema(path))
        run = S.features()  # columns added since older shards were written: read as missing there
        added = {name: run[name] for name in S.ADDED_COLUMNS if name not in own}
        image = {S.IMAGE: own[S.IMAGE]} if S.IMAGE in own else {}
        return Features({**{k: v for k, v in own.items() if k != S.IMAGE}, **added, **image})

    def rewrite(
        self,
        path: str,
        settings: dict[str, Any],
        transform: Callable[[pa.Table], pa.Table],
        schema: pa.Schema,
    ) -> int:
        """Row group by row group (each a table of the shard's own columns), keeping the row groups;
        streamed into a temporary committed over ``path``
        (:class:`~pixart_batch.storage.ParquetStreamWriter`)."""
        import pyarrow.parquet as pq

        rows = 0
        with self.location.fs.open_input_file(path) as handle:
            source = pq.ParquetFile(handle)
            schema = S.with_settings(schema, settings)
            with ParquetStreamWriter(self.location, path, schema, compression="zstd") as writer:
                for index in range(source.metadata.num_row_groups):
                    table = source.read_row_group(index)
                    writer.write(transform(table), row_group_size=max(table.num_rows, 1))
                    rows += table.num_rows
                writer.commit()
        return rows

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.name,
            "data_files": f"{DATA_GLOB}{self.suffix}",
            "features": self.card_features(S.features()),
            "layout": "Parquet shards (`data/<run>/<task//1000>/train-*.parquet`), one row per image.",
        }

    def card_features(self, features: Features) -> list[dict[str, Any]]:
        """The YAML the Hub and ``datasets`` read: class labels with their names, lists of values."""
        entries: list[dict[str, Any]] = []
        for name, feature in features.items():
            inner = getattr(feature, "feature", None)
            names = getattr(feature, "names", None)
            if name == S.IMAGE or type(feature).__name__ == "Image":
                entries.append({"name": name, "dtype": "image"})
            elif names is not None:
                labels = {str(i): n for i, n in enumerate(names)}
                entries.append({"name": name, "dtype": {"class_label": {"names": labels}}})
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
