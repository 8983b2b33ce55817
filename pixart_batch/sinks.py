"""Ray Data sinks: the store's part files, the plan's part files and the image shards, each committed
atomically by the task that writes it."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.data import Datasink

from . import schema as S
from .dataset import OutputDataset, plan_schema
from .store import EmbeddingStore, StoreIdentity

if TYPE_CHECKING:
    from ray.data._internal.execution.interfaces import TaskContext
    from ray.data.block import Block
    from ray.data.datasource.datasink import WriteResult

STORE_COLUMNS = (S.CAPTION_KEY, S.CAPTION, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING)
BUSY_COLUMNS = {"encode": "_busy_encode_s", "denoise": "_busy_denoise_s", "decode": "_busy_decode_s", "write": "_busy_write_s"}


def log(message: str) -> None:
    print(f"[pixart-batch] {message}", file=sys.stderr, flush=True)


def _batches(blocks: Iterable[Block | dict[str, np.ndarray]]) -> Iterable[dict[str, np.ndarray]]:
    """Ray blocks, or numpy batches as the local executor passes them, as numpy batches."""
    from ray.data.block import BlockAccessor

    for block in blocks:
        if isinstance(block, dict):
            if len(next(iter(block.values()), ())):
                yield block
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
    """Writes image rows as Parquet shards of at most ``rows_per_shard`` rows, each committed atomically."""

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        constants: dict[str, Any],
        settings: dict[str, Any],
        rows_per_shard: int,
        row_group_size: int,
    ) -> None:
        self.output_uri, self.run_id, self.constants, self.settings = output_uri, run_id, constants, settings
        self.rows_per_shard, self.row_group_size = rows_per_shard, row_group_size

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_shard

    def write(self, blocks: Iterable[Block | dict[str, np.ndarray]], ctx: TaskContext) -> dict[str, Any]:
        import pyarrow as pa

        output = OutputDataset(self.output_uri)
        result: dict[str, Any] = {
            "rows": 0,
            "failed": 0,
            "files": 0,
            "bytes": 0,
            "truncated": 0,
            "busy_s": Counter(),
            "buckets": Counter(),
        }
        batches = list(_batches(blocks))
        if not batches:
            return result
        everything = _concat(batches)
        for stage, column in BUSY_COLUMNS.items():
            if column in everything:
                result["busy_s"][stage] += float(everything[column].sum())
        failed = everything[S.ERROR].astype(bool)
        if failed.any():
            rows = {name: everything[name][failed].tolist() for name in (S.KEY, S.PROMPT_ID, S.IMAGE_INDEX, S.ERROR, S.TRACEBACK)}
            rows["run"] = [self.run_id] * int(failed.sum())
            output.write_failures(pa.table(rows), f"failures-{self.run_id}-{ctx.task_idx:05d}.parquet")
            result["failed"] = int(failed.sum())
            for key, error in zip(rows[S.KEY], rows[S.ERROR], strict=True):
                log(f"failed {key}: {error}")
        healthy = {name: column[~failed] for name, column in everything.items()}
        total = len(healthy[S.KEY])
        for start in range(0, total, self.rows_per_shard):
            batch = {name: column[start : start + self.rows_per_shard] for name, column in healthy.items()}
            rows_in_shard = len(batch[S.KEY])
            # data/<run>/<task // 1000>/...: no folder grows without bound (datasets reads data/
            # recursively); the name alone is unique too, so shards can be copied flat.
            name = (
                f"{self.run_id}/{ctx.task_idx // 1000:04d}/train-{self.run_id}-{ctx.task_idx:05d}-{result['files']:04d}.parquet"
            )
            result["bytes"] += output.write_shard(
                output.to_table(batch, self.constants, self.settings), name, self.row_group_size
            )
            result["files"] += 1
            result["rows"] += rows_in_shard
            result["truncated"] += int(batch[S.TRUNCATED].sum())
            result["buckets"].update(f"{h}x{w}" for h, w in zip(batch[S.BUCKET_HEIGHT], batch[S.BUCKET_WIDTH], strict=True))
            log(f"committed {name} ({rows_in_shard} images)")
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
            f"{h}x{w}" for h, w in zip(batch[S.BUCKET_HEIGHT].tolist(), batch[S.BUCKET_WIDTH].tolist(), strict=True)
        )
        return {"rows": len(batch[S.KEY]), "buckets": buckets}

    def on_write_complete(self, write_result: WriteResult[dict[str, Any]]) -> None:
        self.results = list(write_result.write_returns)
