"""The Ray executor: the stages wired into Ray Data; the only module that uses Ray.

The driver streams the prompt file into chunks (``OUTPUT/.work/<run>/``); everything else runs on the workers:

1. **clean**: chunks → diffusers' caption cleaning + size plan (CPU tasks), materialized;
2. **encode**: captions → distinct (groupby) → minus the store (anti-join) → T5 actors → store part
   files (committed atomically by :class:`StoreSink`);
3. **plan**: prompts × images_per_prompt → ``plan/<run>/`` (:class:`PlanSink`) → minus committed keys
   (anti-join on the output format's key files) → sorted by bucket, then caption key;
4. **generate**: attach stored embeddings (CPU tasks) → DiT + VAE actors (one pool with
   ``stages.decode.colocate``, else two) → image encoding (CPU tasks) → shards in the output's format
   (:class:`ImageSink`, streamed and committed atomically). A first SIGINT / SIGTERM drains it: the
   store step and the DiT stage pass no new rows, what is in flight is finished and committed, the
   write bundler's last short bundle included (:mod:`pixart_batch.stopping`).

The sinks are thin adapters over the Ray-free writers (:mod:`pixart_batch.output.writers`,
:class:`pixart_batch.store.StoreWriter`). Resource numbers come from the config's ``stages``
section; the comments say why.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import ray
from ray.data import Datasink

from .. import schema as S
from ..batches import Batch
from ..errors import UserError
from ..progress import Poller, Progress, say
from ..stages import stage_class
from ..stopping import GracefulStop, StopFlag, nothing, stoppable
from .base import (
    Cleaned,
    Executor,
    FailureCounter,
    FailureLimits,
    Planned,
    ToEncode,
    caption_rows,
    clean_and_size,
    encode_images,
    monitored,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.actor import ActorHandle
    from ray.data import Dataset
    from ray.data._internal.execution.interfaces import TaskContext
    from ray.data.block import Block
    from ray.data.datasource.datasink import WriteResult

    from ..config import RunConfig, StageConfig
    from ..output.formats import OutputFormat
    from ..output.writers import ImageWriter, ImageWriteResult, PlanWriter
    from ..store import EmbeddingStore, StoreIdentity, StoreWriter


# --------------------------------------------------------------------------- Ray setup


def init_ray(config: RunConfig) -> None:
    """Join ``ray.address`` or ``RAY_ADDRESS`` (set by ``ray job submit``), else start a private local
    instance (``address="local"``: never silently join some other Ray running on this machine)."""
    from ..signals import install_signal_handlers

    if os.environ.get("PIXART_BATCH_FORBID_RAY"):  # the test suite's guard: tests not marked slow start no Ray
        raise UserError("PIXART_BATCH_FORBID_RAY is set: this run may not use Ray (a test not marked slow)")
    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    verbose = config.console.verbose
    # Quiet unless --verbose: what Ray writes on the driver's stderr (its INFO and WARNING lines,
    # the core worker's C++ log lines such as the actor-constructor notice) goes to a file in Ray's
    # log directory; the run speaks through its phase lines and its progress line.
    diverted = None if verbose else divert_native_stderr()
    no_colour_reset_at_exit()
    kwargs: dict[str, Any] = {"log_to_driver": verbose}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=config.ray.num_cpus, include_dashboard=False, **kwargs)
    if diverted is not None:
        where = settle_native_stderr(diverted)
        say(f"Ray's log lines: {where} (--verbose shows them here)")
    install_signal_handlers()  # ray.init replaced SIGTERM's handler with its own sys.exit


def no_colour_reset_at_exit() -> None:
    """Ray's CLI logger calls ``colorama.init()`` when it is imported (during a run), which registers
    an exit handler that writes ``ESC[0m`` on the terminal after the summary line: mark colorama's
    handler as registered already (and drop it if it is)."""
    import atexit

    initialise = getattr(sys.modules.get("colorama"), "initialise", None)
    if initialise is None:
        return
    if getattr(initialise, "atexit_done", False):
        atexit.unregister(initialise.reset_all)
    initialise.atexit_done = True


def divert_native_stderr() -> str | None:
    """Point file descriptor 2 at a temporary file and ``sys.stderr`` at the real stderr: Python
    code (ours, tracebacks) still reaches the console, native and Ray-logger writes do not.
    None when stderr is not a real file (e.g. captured by a test)."""
    import tempfile

    try:
        sys.stderr.flush()
        real = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    handle, path = tempfile.mkstemp(prefix="pixart-batch-ray-", suffix=".log")
    sys.stderr = os.fdopen(real, "w", buffering=1, errors="backslashreplace")
    os.dup2(handle, 2)
    os.close(handle)
    return path


def settle_native_stderr(path: str) -> str:
    """Move the diverted stderr file into Ray's log directory once Ray has one; returns where it is."""
    import shutil

    try:
        node = ray._private.worker.global_worker.node  # Ray has no public accessor of the driver's log directory
        assert node is not None
        logs = node.get_logs_dir_path()
        target = os.path.join(logs, f"pixart-batch-driver-{os.getpid()}.err")
        with open(target, "ab") as out, open(path, "rb") as early:
            shutil.copyfileobj(early, out)
            os.dup2(out.fileno(), 2)
        os.unlink(path)
        return target
    except Exception:
        return path


def configure_data_context(config: RunConfig) -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = config.console.verbose
    if not config.console.verbose:
        context.print_on_execution_start = False  # the "Execution plan" lines
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Retries: Ray Data's defaults are what a long batch job wants and are relied on here —
    # actor-pool actors restart without limit and their in-flight tasks are retried
    # (max_restarts=-1, max_task_retries=-1), tasks lost with a node are re-run. Exceptions
    # raised by our own stage code are not retried by Ray: the stages retry each failing
    # image alone and turn what still fails into failure rows (see stages/common.py), so a
    # map task never fails because of one image and no block is ever dropped.
    context.max_errored_blocks = 0
    # A stage's own exception (SystemicFailure, a full disk) reaches the driver as itself, not as
    # Ray Data's UserCodeException wrapper, so the CLI can print its one line.
    context.raise_original_map_exception = True
    # A deadlock (e.g. actors holding every CPU) must fail the run instead of hanging it.
    context.execution_no_progress_timeout_s = config.ray.no_progress_timeout_s


def map_kwargs(stage: StageConfig, threads: int = 1) -> dict[str, Any]:
    """Ray arguments for an actor stage (``threads``: batches one actor runs at once)."""
    from ray.data import ActorPoolStrategy

    low, high = stage.pool_size()
    pool = ActorPoolStrategy(size=low) if low == high else ActorPoolStrategy(min_size=low, max_size=high)
    return {
        "compute": pool,
        "batch_size": stage.batch_size,
        "batch_format": "numpy",
        "num_cpus": stage.num_cpus,
        # Fractional GPUs let DiT and VAE actors share one card; 0 = run on CPU.
        **({"num_gpus": stage.num_gpus} if stage.num_gpus else {}),
        **({"max_concurrency": threads} if threads > 1 else {}),
    }


def model_pools(config: RunConfig) -> list[tuple[str, bool, dict[str, Any]]]:
    """The actor pools of the generate phase: ``(stage, reports successes, Ray arguments)``.

    With ``stages.decode.colocate`` one pool of DiT + VAE actors sized by ``stages.denoise``,
    two batches in flight per GPU actor (the VAE of one overlaps the DiT of the next); else a
    DiT pool and a VAE pool; with ``stages.score.enabled`` then a pool of CLIP actors of its own, on
    the decoded pixels before the write tasks encode them."""
    stages = config.stages
    score = [("score", False, map_kwargs(stages.score))] if stages.score.enabled else []
    if stages.decode.colocate:
        return [("generate", True, map_kwargs(stages.denoise, threads=2 if stages.denoise.num_gpus > 0 else 1)), *score]
    return [("denoise", False, map_kwargs(stages.denoise)), ("decode", True, map_kwargs(stages.decode)), *score]


def check_gpus(config: RunConfig) -> None:
    """Refuse up front a run whose stages need more GPUs at once than the cluster has.

    The encode phase runs alone; DiT and VAE actors run together. Each pool needs its
    minimum size × ``num_gpus`` to start.
    """
    available = float(ray.cluster_resources().get("GPU", 0.0))
    stages = config.stages
    phases: dict[str, list[tuple[str, StageConfig]]] = {
        "encode": [("encode", stages.encode)],
        "generate": [("denoise", stages.denoise)]
        + ([] if stages.decode.colocate else [("decode", stages.decode)])
        + ([("score", stages.score)] if stages.score.enabled else []),
    }
    for phase, members in phases.items():
        parts = [(name, stage.pool_size()[0], stage.num_gpus) for name, stage in members if stage.num_gpus > 0]
        need = sum(size * gpus for _, size, gpus in parts)
        if need > available + 1e-9:
            detail = " + ".join(f"{name} {size}×{gpus:g}" for name, size, gpus in parts)
            raise UserError(
                f"the {phase} stages need {need:g} GPUs at once ({detail}) but the Ray cluster has {available:g}; "
                "lower stages.*.concurrency or num_gpus, or use a CPU recipe (configs/tiny.yaml, configs/cpu.yaml)"
            )


def shuffle_partitions(rows: int) -> int:
    """Partitions for an all-to-all step: ~100k small rows each, at least 1, at most 64."""
    return max(1, min(64, math.ceil(rows / 100_000)))


# --------------------------------------------------------------------------- CPU task functions


def first_of_group(table: pa.Table) -> pa.Table:
    """One row per caption key (the input of ``groupby(caption_key).map_groups``)."""
    return table.slice(0, 1)


def attach_embeddings(
    batch: Batch,
    root: str,
    identity: StoreIdentity,
    index: list,
    negatives: bool,
    stop: StopFlag,
) -> Batch:
    """The rows' embeddings from the store; none once the run is stopping (:mod:`pixart_batch.stopping`)."""
    from ..store import AttachEmbeddings

    if stop.requested():
        return nothing(batch)
    return AttachEmbeddings(root, identity, index, negatives)(batch)


FailureMonitor: Any = ray.remote(num_cpus=0)(FailureCounter)
"""One :class:`~.base.FailureCounter` for every actor of a Ray run."""


def remote_record(monitor: ActorHandle) -> Callable[[int, list[str]], str | None]:
    def record(ok: int, errors: list[str]) -> str | None:
        return ray.get(monitor.record.remote(ok, errors))

    return record


# --------------------------------------------------------------------------- sinks: thin adapters over the writers


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

    def start(self) -> None:
        init_ray(self.config)
        configure_data_context(self.config)

    def check_resources(self) -> None:
        check_gpus(self.config)

    def clean(self, chunks: list[str], output_fs: Any) -> Cleaned:
        stage = self.config.stages.clean
        prompts = (
            ray.data.read_parquet(chunks, filesystem=output_fs)
            .map_batches(
                clean_and_size,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
                fn_kwargs={
                    "spec": self.spec.clean_spec(),
                    "generation": self.config.generation,
                    "geometry": self.spec.geometry,
                    "table": self.spec.table,
                },
                batch_size=stage.batch_size,
                batch_format="numpy",
                num_cpus=stage.num_cpus,  # cheap text work: a fraction of a CPU so it never starves actors
            )
            .materialize()
        )
        return Cleaned(prompts, int(prompts.sum(S.EMPTY_CAPTION) or 0))

    def to_encode(self, cleaned: Cleaned, store: EmbeddingStore) -> ToEncode:
        prompts: Dataset = cleaned.prompts
        captions = prompts.map_batches(
            caption_rows,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
            fn_kwargs={"negatives": self.spec.uses_negative},
            batch_format="numpy",
            num_cpus=self.config.stages.clean.num_cpus,
        )
        partitions = shuffle_partitions(2 * prompts.count())
        distinct = (
            captions.groupby(S.CAPTION_KEY, num_partitions=partitions)
            .map_groups(first_of_group, batch_format="pyarrow")
            .materialize()
        )
        wanted = distinct.count()
        parts = store.part_files()
        todo = distinct
        if parts:
            known = ray.data.read_parquet(parts, filesystem=store.location.fs).select_columns([S.CAPTION_KEY])
            todo = distinct.join(known, join_type="left_anti", num_partitions=partitions, on=(S.CAPTION_KEY,)).materialize()
        count = todo.count()
        return ToEncode(todo, count, wanted - count)

    def encode(self, todo: ToEncode, writer: StoreWriter) -> None:
        if not todo.count:
            return
        stage = self.config.stages.encode
        # Sorted by key and kept in order, so each store part covers a narrow key range and a lookup
        # opens few parts; small blocks, so actors work in parallel and parts commit as batches finish.
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        try:
            todo.todo.sort(S.CAPTION_KEY).repartition(target_num_rows_per_block=stage.batch_size).map_batches(
                stage_class("encode"),
                fn_constructor_kwargs={"spec": self.spec.encode_spec()},
                **map_kwargs(stage),
            ).write_datasink(StoreSink(writer))
        finally:
            context.execution_options.preserve_order = False

    def plan(self, cleaned: Cleaned, writer: PlanWriter, shards: OutputFormat, dry_run: bool) -> Planned:
        """Everything here runs in Ray workers; the driver only sees counts."""
        from ..output.writers import PlanWriteResult
        from ..plan import expand_images

        generation = self.config.generation
        images = cleaned.prompts.map_batches(
            expand_images,
            fn_kwargs={"images_per_prompt": generation.images_per_prompt, "run_seed": generation.seed},
            batch_format="numpy",
            num_cpus=self.config.stages.clean.num_cpus,
        ).materialize()
        sink = PlanSink(writer)
        labelled = S.LABEL in images.schema().names
        images.select_columns(list(S.plan_schema(labelled).names)).write_datasink(sink)
        written: PlanWriteResult = sink.total(PlanWriteResult())
        key_files = shards.key_files()  # Parquet with a key column, whatever the format
        remaining = images
        if key_files:
            committed = ray.data.read_parquet(key_files, filesystem=shards.location.fs).select_columns([S.KEY])
            partitions = shuffle_partitions(written.rows)
            remaining = remaining.join(committed, join_type="left_anti", num_partitions=partitions, on=(S.KEY,))
        if not dry_run:
            # By bucket (one shape per DiT batch), then by caption key: a batch's embeddings sit together
            # in the store (sorted by caption key), so lookups read about what they use.
            remaining = remaining.sort([S.BUCKET_HEIGHT, S.BUCKET_WIDTH, S.CAPTION_KEY, S.KEY]).materialize()
        todo = remaining.count()
        return Planned(remaining if todo and not dry_run else None, written.rows, todo, written.buckets, written.labels)

    def generate(self, planned: Planned, store: EmbeddingStore, writer: ImageWriter, limits: FailureLimits) -> ImageWriteResult:
        from ..output.writers import ImageWriteResult

        stages = self.config.stages
        monitor = FailureMonitor.remote(limits.max_consecutive, limits.max_rate, limits.rate_after)
        # A graceful stop (first SIGINT / SIGTERM): the flag file makes the store step and the first model
        # stage return no rows for batches not started; the rest drains, the write bundler flushes its
        # last short bundle, and every counted image is committed (see pixart_batch.stopping).
        flag = StopFlag(writer.output_uri, writer.run_id)
        dataset = (
            # Blocks of one DiT batch: images stream through the stages and shards commit as they
            # finish, instead of a whole sorted partition at a time.
            planned.remaining.repartition(target_num_rows_per_block=stages.denoise.batch_size).map_batches(
                attach_embeddings,
                fn_kwargs={
                    "root": store.root,
                    "identity": store.identity,
                    "index": store.index(),
                    "negatives": self.spec.uses_negative,
                    "stop": flag,
                },
                batch_size=stages.denoise.batch_size,
                batch_format="numpy",
                num_cpus=stages.clean.num_cpus,  # I/O-bound reads of the store
            )
        )
        for name, report_success, kwargs in model_pools(self.config):
            stage = monitored(stage_class(name), remote_record(monitor), report_success=report_success)
            dataset = dataset.map_batches(
                # A stopping run starts no new DiT batch; latents already made are still decoded.
                stoppable(stage, flag) if name in ("generate", "denoise") else stage,
                fn_constructor_kwargs=self.spec.generate_kwargs() if name == "generate" else {"spec": self.spec.stage_spec(name)},
                **kwargs,
            )
        dataset = dataset.map_batches(
            encode_images,
            fn_kwargs={"image_format": self.config.output.image_format, "quality": self.config.output.image_quality},
            batch_size=stages.write.batch_size,
            batch_format="numpy",
            num_cpus=stages.write.num_cpus,  # PNG encoding: CPU work kept off the GPU actors
        )
        sink = ImageSink(writer)
        progress = Progress(planned.todo, self.config.console.progress_interval_s)
        poll = lambda: ray.get(monitor.counts.remote())  # noqa: E731
        with GracefulStop(lambda: progress.done, flag) as stop, Poller(progress, poll):
            dataset.write_datasink(sink)
        progress.update(*ray.get(monitor.counts.remote()))
        progress.close()
        stop.raise_if_stopped()
        return sink.total(ImageWriteResult())
