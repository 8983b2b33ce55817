"""The Ray executor: the stages wired into Ray Data; the only module that uses Ray.

The driver streams the prompt file into chunks (``OUTPUT/.work/<run>/``); everything else runs on the workers:

1. **clean**: chunks → diffusers' caption cleaning + size plan (CPU tasks), materialized;
2. **encode**: captions → distinct (groupby) → minus the store (anti-join) → sorted → T5 actors →
   store part files (committed atomically by :class:`StoreSink`);
3. **plan**: prompts × images_per_prompt → ``plan/<run>/`` (:class:`PlanSink`) → minus committed keys
   (anti-join on the output format's key files) → sorted by bucket, then caption key;
4. **generate**: attach stored embeddings (CPU tasks) → DiT + VAE actors (one pool with
   ``stages.decode.colocate``, else two) → image encoding (CPU tasks) → shards in the output's format
   (:class:`ImageSink`, streamed and committed atomically). A first SIGINT / SIGTERM drains it: the
   store step and the DiT stage pass no new rows, what is in flight is finished and committed, the
   write bundler's last short bundle included (:mod:`pixart_batch.stopping`).

The sinks are thin adapters over the Ray-free writers (:mod:`pixart_batch.output.writers`,
:class:`pixart_batch.store.StoreWriter`). The stages, their constructor arguments and every operator's
resources come from the run's :class:`~pixart_batch.execution.ExecutionSpec` (``stages``,
``ray.task_num_cpus``), checked against the cluster first (:mod:`.ray_resources`); the comments say why.
Joining or starting Ray and the run's Ray Data settings are :mod:`.ray_setup`; the run's monitor, its one
helper actor on the driver's node, is :mod:`.ray_monitor`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import ray
from ray.data import Datasink

from .. import schema as S
from ..batches import Batch
from ..progress import Poller, Progress
from ..stages import stage_class
from ..stages.rows import (
    attach_embeddings,
    caption_rows,
    clean_and_size,
    encode_images,
    first_of_group,
    lost_summary,
)
from ..stopping import GracefulStop, StopFlag, stoppable
from .base import (
    Cleaned,
    Executor,
    FailureLimits,
    ToEncode,
    ToGenerate,
    monitored,
)
from .ray_monitor import MonitorCalls, MonitorPoll, start_monitor
from .ray_resources import require_cpus, require_gpus, shuffle_partitions
from .ray_setup import configure_data_context, init_ray

if TYPE_CHECKING:
    from ray.data import Dataset
    from ray.data._internal.execution.interfaces import TaskContext
    from ray.data.block import Block
    from ray.data.datasource.datasink import WriteResult

    from ..execution import ExecutionSpec, StageExecution
    from ..output.formats import OutputFormat
    from ..output.writers import ImageWriter, ImageWriteResult, PlanWriter
    from ..store import EmbeddingStore, StoreWriter

__all__ = [
    "ImageSink",
    "MonitorCalls",
    "MonitorPoll",
    "PlanSink",
    "RayExecutor",
    "StoreSink",
    "check_gpus",
    "init_ray",
    "model_pools",
    "numpy_batches",
    "start_monitor",
]


# --------------------------------------------------------------------------- operators


def map_kwargs(stage: StageExecution) -> dict[str, Any]:
    """Ray arguments for an actor stage."""
    from ray.data import ActorPoolStrategy

    low, high = stage.concurrency
    pool = ActorPoolStrategy(size=low) if low == high else ActorPoolStrategy(min_size=low, max_size=high)
    return {
        "compute": pool,
        "batch_size": stage.batch_size,
        "batch_format": "numpy",
        "num_cpus": stage.num_cpus,
        # Fractional GPUs let DiT and VAE actors share one card; 0 = run on CPU.
        **({"num_gpus": stage.num_gpus} if stage.num_gpus else {}),
        # Batches one actor runs at once (a colocated DiT + VAE: the VAE of one beside the DiT of the next).
        **({"max_concurrency": stage.threads} if stage.threads > 1 else {}),
    }


def model_pools(execution: ExecutionSpec) -> list[tuple[str, bool, dict[str, Any]]]:
    """The actor pools of the generate phase as Ray gets them: ``(stage, reports successes, Ray arguments)``,
    in the spec's order (:attr:`~pixart_batch.execution.ExecutionSpec.generate`)."""
    return [(stage.name, stage.reports_success, map_kwargs(stage)) for stage in execution.generate]


def check_gpus(execution: ExecutionSpec) -> None:
    """Refuse up front a run needing more GPUs at once than the cluster has (:func:`.require_gpus`)."""
    require_gpus(execution, float(ray.cluster_resources().get("GPU", 0.0)))


def small_blocks(dataset: Dataset, rows: int, num_cpus: float) -> Dataset:
    """``dataset`` streamed in blocks of at most ``rows`` rows by tasks asking ``num_cpus`` each. Ray 2.60's
    ``repartition`` takes no resource arguments, although the operator it adds has them (unset, its tasks
    ask Ray Data's default, a whole CPU): they are set on that operator (tests/test_operator_cpus.py)."""
    shaped = dataset.repartition(target_num_rows_per_block=rows)
    cast(Any, shaped._logical_plan.dag).ray_remote_args["num_cpus"] = num_cpus
    return shaped


def keys_in(files: list[str], fs: Any, key: str, num_cpus: float) -> Dataset:
    """The ``key`` column of Parquet ``files``, read by tasks asking ``num_cpus`` each."""
    return ray.data.read_parquet(files, filesystem=fs, num_cpus=num_cpus).select_columns([key])


def without(dataset: Dataset, known: Dataset, key: str, rows: int, num_cpus: float) -> Dataset:
    """The rows of ``dataset`` whose ``key`` is not in ``known`` (a left anti-join over about ``rows`` rows);
    its reduce tasks ask ``num_cpus``, its map tasks a whole CPU (Ray 2.60's: :mod:`.ray_resources`)."""
    partitions, cpus = shuffle_partitions(rows), {"num_cpus": num_cpus}
    return dataset.join(known, "left_anti", partitions, on=(key,), aggregator_ray_remote_args=cpus)


# ---------------------------------------------------------------- sinks: thin adapters over the writers


def numpy_batches(blocks: Iterable[Block]) -> Iterable[Batch]:
    """Ray blocks (Arrow tables, ...) as numpy batches, the empty ones left out."""
    from ray.data.block import BlockAccessor

    for block in blocks:
        accessor = BlockAccessor.for_block(block)
        if accessor.num_rows():
            yield accessor.to_batch_format("numpy")


class _WriterSink(Datasink):
    """A ``Datasink`` whose write tasks call a Ray-free writer's ``write(batches, task)``; the typed
    results of every task are kept on the driver in :attr:`results`."""

    def __init__(self, writer: Any, min_rows: int | None = None) -> None:
        self.writer, self.min_rows = writer, min_rows
        self.results: list[Any] = []

    @property
    def min_rows_per_write(self) -> int | None:
        return self.min_rows

    def write(self, blocks: Iterable[Block], ctx: TaskContext) -> Any:
        return self.writer.write(numpy_batches(blocks), ctx.task_idx)

    def on_write_complete(self, write_result: WriteResult[Any]) -> None:
        self.results = list(write_result.write_returns)

    def total(self, empty: Any) -> Any:
        for result in self.results:
            empty.add(result)
        return empty


class StoreSink(_WriterSink):
    def __init__(self, writer: StoreWriter) -> None:
        super().__init__(writer, writer.rows_per_part)


class PlanSink(_WriterSink):
    pass


class ImageSink(_WriterSink):
    def __init__(self, writer: ImageWriter) -> None:
        super().__init__(writer, writer.rows_per_shard)


# --------------------------------------------------------------------------- the executor


class RayExecutor(Executor):
    name = "ray"

    def setup(self) -> None:
        init_ray(self.execution)
        self._restore: Callable[[], None] | None = configure_data_context(self.execution)

    def teardown(self) -> None:
        """Ray stays up for a later run in this process (its native log lines still diverted to Ray's log
        directory); the Ray Data settings this run changed are put back (:mod:`.ray_setup`)."""
        restore = getattr(self, "_restore", None)
        if restore is not None:
            restore()
            self._restore = None

    def check_resources(self) -> None:
        check_gpus(self.execution)
        require_cpus(self.execution, float(ray.cluster_resources().get("CPU", 0.0)))

    def clean(self, chunks: list[str], output_fs: Any) -> Cleaned:
        step, task = self.execution.clean, self.execution.ray.task_num_cpus
        prompts = (
            ray.data.read_parquet(chunks, filesystem=output_fs, num_cpus=task)  # I/O: a fraction of a CPU
            .map_batches(
                clean_and_size,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
                fn_kwargs=step.args,
                batch_size=step.batch_size,
                batch_format="numpy",
                num_cpus=step.num_cpus,  # cheap text work: a fraction of a CPU so it never starves actors
            )
            .materialize()
        )
        lost = prompts.filter(expr=f"{S.LOST_PROMPT} != ''", num_cpus=task).select_columns([S.LOST_PROMPT])
        found = [row[S.LOST_PROMPT] for row in lost.take_all()]  # the prompts cleaning emptied: few
        return Cleaned(prompts, int(prompts.sum(S.EMPTY_CAPTION) or 0), *lost_summary(found))

    def to_encode(self, cleaned: Cleaned, store: EmbeddingStore) -> ToEncode:
        prompts: Dataset = cleaned.prompts
        captions = prompts.map_batches(
            caption_rows,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
            fn_kwargs={"negatives": self.execution.uses_negative},
            batch_format="numpy",
            num_cpus=self.execution.clean.num_cpus,
        )
        rows, task = 2 * prompts.count(), self.execution.ray.task_num_cpus
        distinct = (
            captions.groupby(S.CAPTION_KEY, num_partitions=shuffle_partitions(rows))
            .map_groups(first_of_group, batch_format="pyarrow", num_cpus=task)
            .materialize()
        )
        wanted = distinct.count()
        parts = store.part_files()
        missing = distinct
        if parts:
            known = keys_in(parts, store.location.fs, S.CAPTION_KEY, task)
            missing = without(distinct, known, S.CAPTION_KEY, rows, task).materialize()
        count = missing.count()
        return ToEncode(missing, count, wanted - count)

    def encode(self, captions: ToEncode, writer: StoreWriter) -> None:
        if not captions.count:
            return
        stage, task = self.execution.encode, self.execution.ray.task_num_cpus
        # Sorted by key and kept in order, so each store part covers a narrow key range and a lookup
        # opens few parts; small blocks, so actors work in parallel and parts commit as batches finish.
        # The sort is done before the T5 pool starts: Ray's sort tasks take a whole CPU (see ray_resources).
        ordered = captions.rows.sort(S.CAPTION_KEY).materialize()
        context = ray.data.DataContext.get_current()
        before, context.execution_options.preserve_order = context.execution_options.preserve_order, True
        try:
            small_blocks(ordered, stage.batch_size, task).map_batches(
                stage_class(stage.name), fn_constructor_kwargs=stage.args, **map_kwargs(stage)
            ).write_datasink(StoreSink(writer), ray_remote_args={"num_cpus": task})  # I/O, beside T5
        finally:
            context.execution_options.preserve_order = before

    def to_generate(
        self, cleaned: Cleaned, writer: PlanWriter, shards: OutputFormat, dry_run: bool
    ) -> ToGenerate:
        """Everything here runs in Ray workers; the driver only sees counts."""
        from ..expansion import expand_images
        from ..output.writers import PlanWriteResult

        execution, task = self.execution, self.execution.ray.task_num_cpus
        images = cleaned.prompts.map_batches(
            expand_images,
            fn_kwargs={"images_per_prompt": execution.images_per_prompt, "run_seed": execution.seed},
            batch_format="numpy",
            num_cpus=execution.clean.num_cpus,
        ).materialize()
        sink = PlanSink(writer)
        labelled = S.LABEL in images.schema().names
        columns = list(S.plan_schema(labelled).names)
        plan = images.select_columns(columns, num_cpus=task)  # I/O-bound: a fraction of a CPU
        plan.write_datasink(sink, ray_remote_args={"num_cpus": task})
        written: PlanWriteResult = sink.total(PlanWriteResult())
        key_files = shards.key_files()  # Parquet with a key column, whatever the format
        remaining = images
        if key_files:
            committed = keys_in(key_files, shards.location.fs, S.KEY, task)
            remaining = without(remaining, committed, S.KEY, written.rows, task)
        if not dry_run:
            # By bucket (one shape per DiT batch), then by caption key: a batch's embeddings sit together
            # in the store (sorted by caption key), so lookups read about what they use.
            remaining = remaining.sort([S.BUCKET_HEIGHT, S.BUCKET_WIDTH, S.CAPTION_KEY, S.KEY]).materialize()
        count = remaining.count()
        return ToGenerate(
            remaining if count and not dry_run else None, written.rows, count, written.buckets, written.labels
        )

    def generate(
        self, images: ToGenerate, store: EmbeddingStore, writer: ImageWriter, limits: FailureLimits
    ) -> ImageWriteResult:
        from ..output.writers import ImageWriteResult

        execution = self.execution
        monitor = start_monitor(limits)
        # A graceful stop (first SIGINT / SIGTERM): the flag file makes the store step and the first model
        # stage return no rows for batches not started; the rest drains, the write bundler flushes its
        # last short bundle, and every counted image is committed (see pixart_batch.stopping).
        flag = StopFlag(writer.output_uri, writer.run_id)
        dataset = self.with_embeddings(images.rows, store, flag)
        for stage in execution.generate:
            model = monitored(
                stage_class(stage.name), MonitorCalls(monitor), report_success=stage.reports_success
            )
            dataset = dataset.map_batches(
                # A stopping run starts no new DiT batch; latents already made are still decoded.
                stoppable(model, flag) if stage.starts_images else model,
                fn_constructor_kwargs=stage.args,
                **map_kwargs(stage),
            )
        write = execution.write
        dataset = dataset.map_batches(
            encode_images,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
            fn_kwargs=write.args,
            batch_size=write.batch_size,
            batch_format="numpy",
            num_cpus=write.num_cpus,  # PNG encoding: CPU work kept off the GPU actors
        )
        sink = ImageSink(writer)
        progress = Progress(images.count, execution.progress_interval_s)
        poll = MonitorPoll(monitor)
        with GracefulStop(lambda: progress.done, flag) as stop, Poller(progress, poll):
            dataset.write_datasink(sink, ray_remote_args={"num_cpus": write.num_cpus})  # as encoding
        progress.update(*poll())
        progress.close()
        stop.raise_if_stopped()
        return sink.total(ImageWriteResult())

    def with_embeddings(self, rows: Dataset, store: EmbeddingStore, flag: StopFlag) -> Dataset:
        """The images to make with their stored embeddings attached, in blocks of one batch of the first
        model stage: images stream through the stages and shards commit as they finish, instead of a whole
        sorted partition at a time."""
        execution = self.execution
        size = execution.generate[0].batch_size
        return small_blocks(rows, size, execution.ray.task_num_cpus).map_batches(
            attach_embeddings,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs: the rest
            fn_kwargs={
                "root": store.root,
                "identity": store.identity,
                "index": store.index(),
                "negatives": execution.uses_negative,
                "stop": flag,
            },
            batch_size=size,
            batch_format="numpy",
            num_cpus=execution.clean.num_cpus,  # I/O-bound reads of the store
        )
