"""Ray Data sinks: the store's part files, the plan's part files and the image shards, each committed
atomically by the task that writes it."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.data import Datasink

from . import schema as S
from .dataset import OutputDataset, plan_schema
from .store import EmbeddingStore, StoreIdentity

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data._internal.execution.interfaces import TaskContext
    from ray.data.block import Block
    from ray.data.datasource.datasink import WriteResult

    from .writers import ShardWriter

STORE_COLUMNS = (S.CAPTION_KEY, S.CAPTION, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING)
STORE_BYTES_COLUMNS = {"store_bytes_read": "_store_bytes_read", "store_bytes_used": "_store_bytes_used"}
"""Counters :class:`~.store.AttachEmbeddings` adds to each batch, summed into each write task's result."""
BUSY_COLUMNS = {"encode": "_busy_encode_s", "denoise": "_busy_denoise_s", "decode": "_busy_decode_s", "write": "_busy_write_s"}


def log(message: str) -> None:
    """Per-shard and per-failure lines: INFO on the package's logger (shown with ``--verbose``);
    the console's progress line carries the counts."""
    logging.getLogger("pixart_batch").info(message)


def _batches(blocks: Iterable[Block | dict[str, np.ndarray]]) -> Iterable[dict[str, np.ndarray]]:
    """The non-empty blocks as numpy batches: Ray blocks (Arrow tables, ...) or dicts of numpy arrays
    (an in-process executor hands those over)."""
    from ray.data.block import BlockAccessor

    for block in blocks:
        if isinstance(block, dict):
            if block and len(next(iter(block.values()))):
                yield {name: np.asarray(column) for name, column in block.items()}
            continue
        accessor = BlockAccessor.for_block(block)
        if accessor.num_rows():
            yield accessor.to_batch_format("numpy")


def _concat(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


class StoreSink(Datasink):
    """Writes each task's encoded captions as one store part file, committed atomically."""

    def __init__(self, root: str, identity: StoreIdentity, rows_per_part: int) -> None:
        self.root, self.identity, self.rows_per_part = root, identity, rows_per_part

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_part

    def write(self, blocks: Iterable[Block | dict[str, np.ndarray]], ctx: TaskContext) -> dict[str, Any]:
        import pyarrow as pa

        store = EmbeddingStore(self.root, self.identity)
        batches = list(_batches(blocks))
        if not batches:
            return {"rows": 0, "busy_s": 0.0}
        batch = _concat(batches)
        total = len(batch[S.CAPTION_KEY])
        for start in range(0, total, self.rows_per_part):
            part = {name: batch[name][start : start + self.rows_per_part].tolist() for name in STORE_COLUMNS}
            store.write_part(pa.table(part))
        return {"rows": total, "busy_s": float(batch[BUSY_COLUMNS["encode"]].sum())}


class ImageSink(Datasink):
    """Writes image rows as shards of at most ``rows_per_shard`` rows in ``output_format``
    (:data:`~.writers.FORMATS`), each committed atomically."""

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        constants: dict[str, Any],
        settings: dict[str, Any],
        rows_per_shard: int,
        row_group_size: int,
        output_format: str = "parquet",
    ) -> None:
        self.output_uri, self.run_id, self.constants, self.settings = output_uri, run_id, constants, settings
        self.rows_per_shard, self.row_group_size, self.output_format = rows_per_shard, row_group_size, output_format

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_shard

    def write(self, blocks: Iterable[Block | dict[str, np.ndarray]], ctx: TaskContext) -> dict[str, Any]:
        """Stream the task's healthy rows into shards of ``rows_per_shard`` rows, row group by row group.

        A shard is written as its rows arrive and committed once full (the last one when the blocks end);
        at most one row group is held besides the incoming block, whatever ``rows_per_shard`` is.
        ``ctx`` needs only ``task_idx``; ``blocks`` are Ray blocks or dicts of numpy arrays.
        """
        import pyarrow as pa

        output = OutputDataset(self.output_uri, self.output_format)
        result: dict[str, Any] = {
            "rows": 0,
            "failed": 0,
            "files": 0,
            "bytes": 0,
            "truncated": 0,
            "busy_s": Counter(),
            "buckets": Counter(),
            **{name: 0 for name in STORE_BYTES_COLUMNS},
        }
        failures: dict[str, list[Any]] = {name: [] for name in (S.KEY, S.PROMPT_ID, S.IMAGE_INDEX, S.ERROR, S.TRACEBACK)}
        shard = _Shard(output, self, ctx.task_idx)
        try:
            for batch in _batches(blocks):
                for stage, column in BUSY_COLUMNS.items():
                    if column in batch:
                        result["busy_s"][stage] += float(batch[column].sum())
                for name, column in STORE_BYTES_COLUMNS.items():
                    if column in batch:
                        result[name] += int(batch[column].sum())
                failed = batch[S.ERROR].astype(bool)
                if failed.any():
                    for name, values in failures.items():
                        values.extend(batch[name][failed].tolist())
                healthy = {name: column[~failed] for name, column in batch.items()}
                total, start = len(healthy[S.KEY]), 0
                while start < total:
                    take = min(total - start, self.rows_per_shard - shard.rows)
                    piece = {name: column[start : start + take] for name, column in healthy.items()}
                    shard.add(output.to_table(piece, self.constants, self.settings))
                    result["truncated"] += int(piece[S.TRUNCATED].sum())
                    result["buckets"].update(
                        S.bucket_name(w, h) for h, w in zip(piece[S.BUCKET_HEIGHT], piece[S.BUCKET_WIDTH], strict=True)
                    )
                    start += take
                    if shard.rows == self.rows_per_shard:
                        shard.commit(result)
            if shard.rows:
                shard.commit(result)
        finally:
            shard.abort()  # a failure mid-shard: its temporary file goes, nothing appears under data/
        if failures[S.KEY]:
            count = len(failures[S.KEY])
            rows = {**failures, "run": [self.run_id] * count}
            output.write_failures(pa.table(rows), f"failures-{self.run_id}-{ctx.task_idx:05d}.parquet")
            result["failed"] = count
            for key, error in zip(rows[S.KEY], rows[S.ERROR], strict=True):
                log(f"failed {key}: {error}")
        return result

    def on_write_complete(self, write_result: WriteResult[dict[str, Any]]) -> None:
        # Runs on the driver: keep each write task's counts for the run report.
        self.results = list(write_result.write_returns)


class PlanSink(Datasink):
    """Writes the plan (one small row per planned image) as part files of ``plan/<run>/``."""

    def __init__(self, output_uri: str, run_id: str) -> None:
        self.output_uri, self.run_id = output_uri, run_id

    def write(self, blocks: Iterable[Block | dict[str, np.ndarray]], ctx: TaskContext) -> dict[str, Any]:
        import pyarrow as pa

        batches = list(_batches(blocks))
        if not batches:
            return {"rows": 0, "buckets": Counter()}
        batch = _concat(batches)
        output = OutputDataset(self.output_uri)
        table = pa.table({name: batch[name] for name in plan_schema().names})
        output.write_plan_part(self.run_id, table, f"part-{ctx.task_idx:05d}.parquet")
        buckets = Counter(
            S.bucket_name(w, h) for h, w in zip(batch[S.BUCKET_HEIGHT].tolist(), batch[S.BUCKET_WIDTH].tolist(), strict=True)
        )
        return {"rows": len(batch[S.KEY]), "buckets": buckets}

    def on_write_complete(self, write_result: WriteResult[dict[str, Any]]) -> None:
        self.results = list(write_result.write_returns)


class _Shard:
    """The shard an :class:`ImageSink` task is filling, through its output's format's
    :class:`~.writers.ShardWriter` (opened with the first row)."""

    def __init__(self, output: OutputDataset, sink: ImageSink, task_idx: int) -> None:
        self.output, self.sink, self.task_idx = output, sink, task_idx
        self.writer: ShardWriter | None = None
        self.rows = 0
        self.files = 0
        self.name = ""

    def add(self, table: pa.Table) -> None:
        if self.writer is None:
            self.name = self.output.format.shard_name(self.sink.run_id, self.task_idx, self.files)
            self.writer = self.output.format.open_shard(self.name, self.sink.settings, self.sink.row_group_size)
        self.writer.write(table)
        self.rows += table.num_rows

    def commit(self, result: dict[str, Any]) -> None:
        assert self.writer is not None
        result["bytes"] += self.writer.commit()
        result["files"] += 1
        result["rows"] += self.rows
        log(f"committed {self.name} ({self.rows} images)")
        self.files += 1
        self.writer, self.rows = None, 0

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
