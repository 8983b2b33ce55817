"""The in-process executor: the same stages as the Ray pipeline, one after another in this process.

A small run on one machine pays most of its time in fixed costs when it goes through Ray: a local
Ray instance, a worker process per actor (each importing torch and diffusers), and Ray Data's
materialized passes, group-bys, joins and sorts over a few rows. This executor keeps every
contract of the run (the staged prompts, the plan, the store and shard formats, atomic commits, the
failure limits) and imports no Ray at all:

- clean, distinct captions, the anti-joins and the sort run over in-memory columns (a local run
  plans at most ``ray.local_max_images`` images, so the plan fits in memory);
- a phase with nothing to do loads no model;
- the spec's stages run in its order, each model loaded once and using every core (torch's default
  threads), as the plain diffusers loop does, over batches of its ``batch_size``; what this cannot honour
  (``num_cpus``, ``concurrency``, ``stages.decode.colocate``, a share of a GPU or several) is named in
  one warning line when it differs from the default (:attr:`LocalExecutor.honours`);
- the image rows stream through the same :class:`~pixart_batch.output.writers.ImageWriter` that Ray's
  write tasks use, a shard committed as soon as it is full; a first SIGINT / SIGTERM lets the batch being
  made finish and commits every row made, the open shard as a short one (:mod:`pixart_batch.stopping`).

The same prompts, config and seeds make the same rows either way (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import schema as S
from ..batches import Batch, chunks, concat, rows, take
from ..errors import UserError
from ..progress import Progress
from ..stages import stage_class
from ..stages.rows import caption_rows, clean_and_size, encode_images, lost_summary
from ..stopping import GracefulStop
from .base import (
    Cleaned,
    Executor,
    FailureCounter,
    FailureLimits,
    ToEncode,
    ToGenerate,
    monitored,
)

if TYPE_CHECKING:
    from ..output.formats import OutputFormat
    from ..output.writers import ImageWriter, ImageWriteResult, PlanWriter
    from ..store import EmbeddingStore, StoreWriter


def release_gpu_memory(num_gpus: float) -> None:
    """Hand a finished model's cached CUDA memory back (as the Ray path does when its actor exits)."""
    if num_gpus <= 0:
        return
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def over_chunks(stage: Callable[[Batch], Batch], batch: Batch, size: int) -> Batch:
    """``stage`` over ``batch`` in chunks of ``size`` rows (the batches Ray would hand it), joined again."""
    if rows(batch) <= size:
        return stage(batch)
    return concat([stage(chunk) for chunk in chunks(batch, size)])


def whole_gpus(num_gpus: float) -> bool:
    """A stage runs on no GPU or on one: a share of a card, or several, means nothing in one process."""
    return num_gpus in (0, 1)


class LocalExecutor(Executor):
    name = "local"
    honours = {"stages.*.batch_size": None, "stages.*.num_gpus": whole_gpus}
    ignores_why = (
        "it runs each stage once, one batch at a time, in this process, on every core and at most one GPU; "
        "ray.executor: ray uses them"
    )

    def check(self) -> None:
        """Stages asking for GPUs need one in this process (there is no cluster to find one on)."""
        execution = self.execution
        wants = [stage.source for stage in (execution.encode, *execution.generate) if stage.num_gpus > 0]
        if not wants:
            return
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"stages {', '.join(wants)} ask for a GPU (num_gpus > 0) but torch sees none on this "
                "machine; use a CPU recipe (configs/tiny.yaml, configs/cpu.yaml) or run on a GPU machine"
            )

    def check_resources(self) -> None:
        pass  # checked before anything was written (check)

    def clean(self, chunks: list[str], output_fs: Any) -> Cleaned:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for path in chunks:
            with output_fs.open_input_file(path) as handle:
                tables.append(pq.read_table(handle))
        table = pa.concat_tables(tables)
        staged: Batch = {
            name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
        }
        step = self.execution.clean
        prompts = over_chunks(lambda batch: clean_and_size(batch, **step.args), staged, step.batch_size)
        return Cleaned(
            prompts, int(prompts[S.EMPTY_CAPTION].sum()), *lost_summary(prompts[S.LOST_PROMPT].tolist())
        )

    def to_encode(self, cleaned: Cleaned, store: EmbeddingStore) -> ToEncode:
        captions = caption_rows(cleaned.prompts, self.execution.uses_negative)
        distinct = dict(zip(captions[S.CAPTION_KEY].tolist(), captions[S.CAPTION].tolist(), strict=True))
        known = store.held_keys(distinct)
        missing = sorted(key for key in distinct if key not in known)  # by key, as the Ray path writes parts
        batch: Batch = {
            S.CAPTION_KEY: np.array(missing, dtype=object),
            S.CAPTION: np.array([distinct[key] for key in missing], dtype=object),
        }
        return ToEncode(batch, len(missing), len(distinct) - len(missing))

    def encode(self, captions: ToEncode, writer: StoreWriter) -> None:
        if not captions.count:
            return
        stage = self.execution.encode
        encoder = stage_class(stage.name)(**stage.args)
        # store parts commit as batches finish
        for task, chunk in enumerate(chunks(captions.rows, stage.batch_size)):
            writer.write([encoder(chunk)], task)
        del encoder
        release_gpu_memory(stage.num_gpus)  # T5 (9.5 GB for T5-XXL) leaves the card before the DiT loads

    def to_generate(
        self, cleaned: Cleaned, writer: PlanWriter, shards: OutputFormat, dry_run: bool
    ) -> ToGenerate:
        from ..expansion import expand_images

        execution = self.execution
        images = expand_images(dict(cleaned.prompts), execution.images_per_prompt, execution.seed)
        written = writer.write([{name: images[name] for name in S.plan_schema(S.LABEL in images).names}], 0)
        committed = shards.committed_keys()
        keep = np.array([key not in committed for key in images[S.KEY].tolist()], dtype=bool)
        remaining = take(images, keep)
        # As the Ray path: by bucket, then caption key (a batch's embeddings sit together in the store).
        columns = (S.KEY, S.CAPTION_KEY, S.BUCKET_WIDTH, S.BUCKET_HEIGHT)
        remaining = take(remaining, np.lexsort(tuple(remaining[name] for name in columns)))
        count = rows(remaining)
        return ToGenerate(
            remaining if count and not dry_run else None, written.rows, count, written.buckets, written.labels
        )

    def generate(
        self, images: ToGenerate, store: EmbeddingStore, writer: ImageWriter, limits: FailureLimits
    ) -> ImageWriteResult:
        from ..output.writers import ImageWriteResult

        counter = FailureCounter(limits.max_consecutive, limits.max_rate, limits.rate_after)
        steps = self.model_steps(store, counter)
        progress = Progress(images.count, self.execution.progress_interval_s)
        # A graceful stop (first SIGINT / SIGTERM): the batch being made finishes, no new one starts, the
        # rows made so far are written (the open shard as a short one), then the interrupt is raised.
        stop = GracefulStop(lambda: progress.done)

        def batches() -> Iterator[Batch]:
            for chunk in chunks(images.rows, self.execution.generate[0].batch_size):
                if stop.requested:
                    return
                out = chunk
                for step, size in steps:
                    out = over_chunks(step, out, size)
                failed = int(out[S.ERROR].astype(bool).sum())
                progress.add(rows(out) - failed, failed)
                yield out

        result = ImageWriteResult()
        with stop:
            for task, group in enumerate(in_shards(batches(), writer.rows_per_shard)):
                result.add(writer.write(group, task))
        progress.close()
        stop.raise_if_stopped()
        return result

    def model_steps(
        self, store: EmbeddingStore, counter: FailureCounter
    ) -> list[tuple[Callable[[Batch], Batch], int]]:
        """What each batch of the generate phase goes through, with the batch size of each: the stored
        embeddings attached, the spec's model stages in order (each loaded once, in this process), the
        image encoding."""
        from ..store import AttachEmbeddings

        execution = self.execution
        attach = AttachEmbeddings(store.root, store.identity, store.index(), execution.uses_negative)
        steps: list[tuple[Callable[[Batch], Batch], int]] = [(attach, execution.generate[0].batch_size)]
        for stage in execution.generate:
            model = monitored(stage_class(stage.name), counter.record, report_success=stage.reports_success)
            steps.append((model(**stage.args), stage.batch_size))
        write = execution.write
        steps.append((lambda batch: encode_images(batch, **write.args), write.batch_size))
        return steps


def in_shards(batches: Iterable[Batch], per_shard: int) -> Iterator[list[Batch]]:
    """The rows in groups of ``per_shard`` (the last one smaller): one write task each, so each shard is
    committed as soon as it is full and a killed run keeps what it made."""
    pending: list[Batch] = []
    for batch in batches:
        pending.append(batch)
        while sum(rows(b) for b in pending) >= per_shard:
            whole = concat(pending)
            yield [take(whole, slice(0, per_shard))]
            rest = take(whole, slice(per_shard, None))
            pending = [rest] if rows(rest) else []
    if pending:
        yield pending
