"""Ray-free writers with typed results: image rows into shards, plan rows into plan parts.

Each ``write(batches, task)`` is one write task's worth (a Ray write task, or a stretch of the
in-process run): it commits every file it writes atomically and returns what it made. Batches are
dicts of numpy columns, as the stages produce them. The Ray executor wraps these in thin
``Datasink`` adapters; the in-process executor calls them directly.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .. import schema as S
from ..batches import Batch, concat, rows
from .formats import DEFAULT_FORMAT
from .layout import OutputDataset

if TYPE_CHECKING:
    import pyarrow as pa

    from .formats import ShardWriter


def log(message: str) -> None:
    """Per-shard and per-failure lines: INFO on the package's logger (shown with ``--verbose``);
    the console's progress line carries the counts."""
    logging.getLogger("pixart_batch").info(message)


class _Summable:
    """A dataclass of counters (numbers, and dicts of numbers) that :meth:`add` sums field by field."""

    def add(self, other: Any) -> None:
        for item in fields(self):  # type: ignore[arg-type]
            mine = getattr(self, item.name)
            if isinstance(mine, dict):
                for key, value in getattr(other, item.name).items():
                    mine[key] = mine.get(key, 0) + value
            else:
                setattr(self, item.name, mine + getattr(other, item.name))


@dataclass
class ImageWriteResult(_Summable):
    """What one write task made."""

    rows: int = 0
    """Healthy rows committed into shards."""
    failed: int = 0
    """Rows written to the failures table."""
    shards: int = 0
    bytes: int = 0
    truncated: int = 0
    """Committed rows whose caption was truncated."""
    busy_s: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (``encode``, ``denoise``, ``decode``, ``write``) these rows kept it busy."""
    buckets: Counter[str] = field(default_factory=Counter)
    """Committed rows per bucket name."""
    labels: Counter[int] = field(default_factory=Counter)
    """A labelled run's committed rows per class id."""
    store_bytes_read: int = 0
    store_bytes_used: int = 0


@dataclass
class PlanWriteResult(_Summable):
    rows: int = 0
    buckets: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    """A labelled run's planned rows per class id."""


def to_table(batch: Batch, constants: dict[str, Any], settings: dict[str, Any] | None = None) -> pa.Table:
    """An Arrow table in the output schema from a stage batch (``image_bytes`` → ``image``); the run's
    settings go into the schema metadata (:data:`~pixart_batch.schema.SHARD_SETTINGS_KEY`)."""
    import pyarrow as pa

    size = len(batch[S.KEY])
    columns: dict[str, Any] = {}
    for name in S.row_columns(settings):
        if name == S.IMAGE:
            columns[name] = [
                {"bytes": blob, "path": f"{key}.{constants[S.IMAGE_FORMAT]}"}
                for key, blob in zip(batch[S.KEY], batch[S.IMAGE_BYTES], strict=True)
            ]
        elif name in constants:
            columns[name] = [constants[name]] * size
        else:
            columns[name] = batch[name].tolist()
    return pa.Table.from_pydict(columns, schema=S.shard_schema(settings))


class ImageWriter:
    """Image rows into shards of at most ``rows_per_shard`` rows in ``output_format``, each committed
    atomically."""

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        constants: dict[str, Any],
        settings: dict[str, Any],
        rows_per_shard: int,
        row_group_size: int,
        output_format: str = DEFAULT_FORMAT,
    ) -> None:
        self.output_uri, self.run_id, self.constants, self.settings = output_uri, run_id, constants, settings
        self.rows_per_shard, self.row_group_size, self.output_format = (
            rows_per_shard,
            row_group_size,
            output_format,
        )

    def write(self, batches: Iterable[Batch], task: int) -> ImageWriteResult:
        """Stream the healthy rows into shards of ``rows_per_shard`` rows, row group by row group.

        A shard is written as its rows arrive and committed once full (the last one when the batches end);
        at most one row group is held besides the incoming batch, whatever ``rows_per_shard`` is. Failed
        rows go to ``failures/failures-<run>-<task>.parquet``.
        """
        import pyarrow as pa

        output = OutputDataset(self.output_uri, self.output_format)
        result = ImageWriteResult()
        failures: dict[str, list[Any]] = {
            name: [] for name in (S.KEY, S.PROMPT_ID, S.IMAGE_INDEX, S.ERROR, S.TRACEBACK)
        }
        shard = _Shard(output, self, task)
        try:
            for batch in batches:
                if not rows(batch):
                    continue
                for stage, column in S.BUSY_COLUMNS.items():
                    if column in batch:
                        result.busy_s[stage] = result.busy_s.get(stage, 0.0) + float(batch[column].sum())
                if S.STORE_BYTES_READ in batch:
                    result.store_bytes_read += int(batch[S.STORE_BYTES_READ].sum())
                if S.STORE_BYTES_USED in batch:
                    result.store_bytes_used += int(batch[S.STORE_BYTES_USED].sum())
                failed = batch[S.ERROR].astype(bool)
                if failed.any():
                    for name, values in failures.items():
                        values.extend(batch[name][failed].tolist())
                healthy = {name: column[~failed] for name, column in batch.items()}
                total, start = len(healthy[S.KEY]), 0
                while start < total:
                    take = min(total - start, self.rows_per_shard - shard.rows)
                    piece = {name: column[start : start + take] for name, column in healthy.items()}
                    shard.add(to_table(piece, self.constants, self.settings))
                    result.truncated += int(piece[S.TRUNCATED].sum())
                    result.buckets.update(
                        S.bucket_name(w, h)
                        for h, w in zip(piece[S.BUCKET_HEIGHT], piece[S.BUCKET_WIDTH], strict=True)
                    )
                    if S.LABEL in piece:
                        result.labels.update(int(number) for number in piece[S.LABEL].tolist())
                    start += take
                    if shard.rows == self.rows_per_shard:
                        shard.commit(result)
            if shard.rows:
                shard.commit(result)
        finally:
            shard.abort()  # a failure mid-shard: its temporary file goes, nothing appears under data/
        if failures[S.KEY]:
            count = len(failures[S.KEY])
            table = {**failures, S.RUN: [self.run_id] * count}
            output.write_failures(pa.table(table), f"failures-{self.run_id}-{task:05d}.parquet")
            result.failed = count
            for key, error in zip(table[S.KEY], table[S.ERROR], strict=True):
                log(f"failed {key}: {error}")
        return result


class _Shard:
    """The shard an :class:`ImageWriter` task is filling, through its output format's
    :class:`~.formats.ShardWriter` (opened with the first row)."""

    def __init__(self, output: OutputDataset, writer: ImageWriter, task: int) -> None:
        self.output, self.sink, self.task = output, writer, task
        self.writer: ShardWriter | None = None
        self.rows = 0
        self.number = 0
        self.name = ""

    def add(self, table: pa.Table) -> None:
        if self.writer is None:
            self.name = self.output.format.shard_name(self.sink.run_id, self.task, self.number)
            self.writer = self.output.format.open_shard(
                self.name, self.sink.settings, self.sink.row_group_size
            )
        self.writer.write(table)
        self.rows += table.num_rows

    def commit(self, result: ImageWriteResult) -> None:
        assert self.writer is not None
        result.bytes += self.writer.commit()
        result.shards += 1
        result.rows += self.rows
        log(f"committed {self.name} ({self.rows} images)")
        self.number += 1
        self.writer, self.rows = None, 0

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


class PlanWriter:
    """The plan (one small row per planned image) as part files of ``plan/<run>/``."""

    def __init__(self, output_uri: str, run_id: str) -> None:
        self.output_uri, self.run_id = output_uri, run_id

    def write(self, batches: Iterable[Batch], task: int) -> PlanWriteResult:
        import pyarrow as pa

        present = [batch for batch in batches if rows(batch)]
        if not present:
            return PlanWriteResult()
        batch = concat(present)
        labelled = S.LABEL in batch
        table = pa.table({name: batch[name] for name in S.plan_schema(labelled).names})
        OutputDataset(self.output_uri).write_plan_part(self.run_id, table, f"part-{task:05d}.parquet")
        buckets = Counter(
            S.bucket_name(w, h)
            for h, w in zip(batch[S.BUCKET_HEIGHT].tolist(), batch[S.BUCKET_WIDTH].tolist(), strict=True)
        )
        labels = Counter(int(number) for number in batch[S.LABEL].tolist()) if labelled else Counter()
        return PlanWriteResult(rows=len(batch[S.KEY]), buckets=buckets, labels=labels)
