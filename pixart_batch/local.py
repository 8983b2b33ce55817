"""The in-process executor: the same stages as the Ray pipeline, one after another in this process.

A small run on one machine pays most of its time in fixed costs when it goes through Ray: a
local Ray instance, a worker process per actor (each importing torch and diffusers), and Ray
Data's materialized passes, group-bys, joins and sorts over a few rows. :class:`LocalRun`
keeps every contract of :class:`~pixart_batch.pipeline.Run` (the lock, the staged prompts, the
plan, the store and shard formats, atomic commits, the failure limits, the run report) and
swaps only the executor:

- clean, distinct captions, the anti-joins and the sort run over in-memory columns (a local
  run plans at most ``ray.local_max_images`` images, so the plan fits in memory);
- a phase with nothing to do loads no model: a run with nothing left reads the prompts, the
  store's keys and the shards' keys, and exits;
- each model is loaded once and uses every core (torch's default threads), as the plain
  diffusers loop does;
- the image rows stream through the same :class:`~pixart_batch.sinks.ImageSink` that Ray's
  write tasks use, one generator of batches for the whole run.

The same prompts, config and seeds make the same rows either way (tested).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import schema as S
from .dataset import plan_schema
from .errors import UserError
from .pipeline import (
    FailureCounter,
    Run,
    _monitored,
    _stage_class,
    caption_rows,
    clean_and_size,
)
from .plan import expand_images
from .progress import Progress
from .sinks import PlanSink, StoreSink

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class _Task:
    """What the sinks read of Ray's TaskContext: the task index names the files a task commits."""

    task_idx: int = 0


def _take(batch: Batch, rows: np.ndarray | slice) -> Batch:
    return {name: column[rows] for name, column in batch.items()}


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _chunks(batch: Batch, size: int) -> Iterator[Batch]:
    for start in range(0, _rows(batch), size):
        yield _take(batch, slice(start, start + size))


def _release_gpu_memory(num_gpus: float) -> None:
    """Hand a finished model's cached CUDA memory back (as the Ray path does when its actor exits)."""
    if num_gpus <= 0:
        return
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class LocalRun(Run):
    executor = "local"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.check_gpus_here()  # before anything is written, like every other input check

    def check_resources(self) -> None:
        pass

    def check_gpus_here(self) -> None:
        """Stages asking for GPUs need one in this process (there is no cluster to find one on)."""
        stages = self.config.stages
        wants = [name for name in ("encode", "denoise", "decode") if getattr(stages, name).num_gpus > 0]
        if not wants:
            return
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"stages {', '.join(wants)} ask for a GPU (num_gpus > 0) but torch sees none on this machine; "
                "use a CPU recipe (configs/tiny.yaml, configs/cpu.yaml) or run on a GPU machine"
            )

    # -- phase 1
    def clean(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        start = time.perf_counter()
        tables = []
        for path in self.chunks:
            with self.output.location.fs.open_input_file(path) as handle:
                tables.append(pq.read_table(handle))
        table = pa.concat_tables(tables)
        staged: Batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        self.local_prompts = clean_and_size(
            staged, self.spec.clean_spec(), self.config.generation, self.spec.geometry, self.spec.table
        )
        self.report.captions_empty = int(self.local_prompts["_empty"].sum())
        self.report.stage_seconds["clean"] = time.perf_counter() - start
        self.log(f"cleaned {self.scan.count} prompts ({self.report.captions_empty} cleaned to empty text)")

    # -- the embedding store
    def stored_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` the store holds: only parts whose key range holds a wanted key are read,
        and of them only the key column."""
        import pyarrow.parquet as pq

        wanted = sorted(keys)
        found: set[str] = set()
        for path, low, high in self.store.index():
            if not any(low <= key <= high for key in wanted):
                continue
            with self.store.location.fs.open_input_file(path) as handle:
                found.update(pq.read_table(handle, columns=[S.CAPTION_KEY]).column(0).to_pylist())
        return found & set(keys)

    def encode(self) -> None:
        start = time.perf_counter()
        captions = caption_rows(self.local_prompts, self.spec.uses_negative)
        distinct = dict(zip(captions[S.CAPTION_KEY].tolist(), captions[S.CAPTION].tolist(), strict=True))
        known = self.stored_keys(list(distinct))
        todo = sorted(key for key in distinct if key not in known)  # by key, as the Ray path writes parts
        self.report.embeddings_encoded = len(todo)
        self.report.embeddings_reused = len(distinct) - len(todo)
        self.log(
            f"embedding store {self.store.uri}: {self.report.embeddings_encoded} captions to encode, "
            f"{self.report.embeddings_reused} reused"
        )
        if todo:
            stage = self.config.stages.encode
            encoder = _stage_class("encode")(spec=self.spec.encode_spec())
            batch: Batch = {
                S.CAPTION_KEY: np.array(todo, dtype=object),
                S.CAPTION: np.array([distinct[key] for key in todo], dtype=object),
            }
            sink = StoreSink(self.store_root, self.identity, rows_per_part=self.config.output.store_rows_per_part)
            for task, chunk in enumerate(_chunks(batch, stage.batch_size)):  # parts commit as batches finish
                sink.write([encoder(chunk)], _Task(task))  # type: ignore[arg-type]
            del encoder
            _release_gpu_memory(stage.num_gpus)  # T5 (9.5 GB for T5-XXL) leaves the card before the DiT loads
        self.report.stage_seconds["encode"] = time.perf_counter() - start

    # -- phase 2
    def plan(self, dry_run: bool = False) -> Batch | None:  # type: ignore[override]
        generation = self.config.generation
        start = time.perf_counter()
        images = expand_images(dict(self.local_prompts), generation.images_per_prompt, generation.seed)
        plan_sink = PlanSink(self.output.uri, self.run_id)
        result = plan_sink.write([{name: images[name] for name in plan_schema().names}], _Task())  # type: ignore[arg-type]
        self.report.images_planned = result["rows"]
        self.output.commit_plan(self.run_id, self.report.images_planned, dry_run=dry_run)
        buckets: Counter = result["buckets"]
        committed = self.output.committed_keys()
        keep = np.array([key not in committed for key in images[S.KEY].tolist()], dtype=bool)
        remaining = _take(images, keep)
        # As the Ray path: by bucket, then caption key (a batch's embeddings sit together in the store).
        columns = (S.KEY, S.CAPTION_KEY, S.BUCKET_WIDTH, S.BUCKET_HEIGHT)
        order = np.lexsort(tuple(remaining[name] for name in columns))
        remaining = _take(remaining, order)
        todo = _rows(remaining)
        self.planned(todo, buckets, start, dry_run)
        return remaining if todo and not dry_run else None

    def generate(self, remaining: Batch | None) -> None:  # type: ignore[override]
        if remaining is None:
            return
        from .stages.write import ImageEncoder
        from .store import AttachEmbeddings

        stages, limits = self.config.stages, self.config.failures
        start = time.perf_counter()
        counter = FailureCounter(limits.max_consecutive, limits.max_rate, limits.rate_after)
        attach = AttachEmbeddings(self.store_root, self.identity, self.store.index(), self.spec.uses_negative)
        # DiT then VAE in this process (decoding in chunks of stages.decode.batch_size).
        model = _monitored(_stage_class("generate"), counter.record, report_success=True)(**self.spec.generate_kwargs())
        encode = ImageEncoder(self.config.output.image_format, self.config.output.image_quality)

        progress = Progress(_rows(remaining), self.config.console.progress_interval_s)

        def batches() -> Iterator[Batch]:
            for chunk in _chunks(remaining, stages.denoise.batch_size):
                out = encode(model(attach(chunk)))
                failed = int(out[S.ERROR].astype(bool).sum())
                progress.add(_rows(out) - failed, failed)
                yield out

        sink = self.image_sink()
        results: list[dict[str, Any]] = []

        def commit(rows: list[Batch], task: int) -> None:
            """One write task's worth: a shard of ``rows_per_shard`` images (and its failures file)."""
            results.append(sink.write(rows, _Task(task)))  # type: ignore[arg-type]

        # Each shard is committed as soon as it is full, so a killed run keeps what it made.
        per_shard, pending, task = self.config.output.rows_per_shard, [], 0
        for batch in batches():
            pending.append(batch)
            while sum(_rows(b) for b in pending) >= per_shard:
                whole = {name: np.concatenate([b[name] for b in pending]) for name in pending[0]}
                commit([_take(whole, slice(0, per_shard))], task)
                rest = _take(whole, slice(per_shard, None))
                pending, task = ([rest] if _rows(rest) else []), task + 1
        if pending:
            commit(pending, task)
        progress.close()
        self.generated(results, start)
