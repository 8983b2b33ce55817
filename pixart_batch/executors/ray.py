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
:class:`pixart_batch.store.StoreWriter`). Every operator's resources come from the config (``stages``,
``ray.task_num_cpus``), checked against the cluster first (:mod:`.ray_resources`); the comments say why.
The run's monitor, its one helper actor, lives on the driver's node (:func:`start_monitor`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import ray
from ray.data import Datasink

from .. import schema as S
from ..batches import Batch
from ..errors import UserError
from ..progress import Poller, Progress, say
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
from ..streams import divert_native_stderr, no_colour_reset_at_exit
from .base import (
    Cleaned,
    Executor,
    FailureLimits,
    PolledCounter,
    ToEncode,
    ToGenerate,
    monitored,
)
from .ray_resources import generate_pools, require_cpus, require_gpus, shuffle_partitions

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.data import Dataset
    from ray.data._internal.execution.interfaces import TaskContext
    from ray.data.block import Block
    from ray.data.datasource.datasink import WriteResult

    from ..config import RunConfig, StageConfig
    from ..output.formats import OutputFormat
    from ..output.writers import ImageWriter, ImageWriteResult, PlanWriter
    from ..store import EmbeddingStore, StoreWriter


# --------------------------------------------------------------------------- Ray setup


def init_ray(config: RunConfig) -> None:
    """Join ``ray.address`` or ``RAY_ADDRESS`` (set by ``ray job submit``), else start a private local
    instance (``address="local"``: never silently join some other Ray running on this machine)."""
    from ..signals import install_signal_handlers

    if os.environ.get(
        "PIXART_BATCH_FORBID_RAY"
    ):  # the test suite's guard: tests not marked slow start no Ray
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


def settle_native_stderr(path: str) -> str:
    """Move the diverted stderr file into Ray's log directory once Ray has one; returns where it is."""
    import shutil

    try:
        node = (
            ray._private.worker.global_worker.node
        )  # Ray has no public accessor of the driver's log directory
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


CONTEXT_FIELDS: tuple[str, ...] = ("enable_progress_bars", "print_on_execution_start", "max_errored_blocks")
CONTEXT_FIELDS += ("raise_original_map_exception", "execution_no_progress_timeout_s")
"""The ``DataContext`` settings a run changes (and puts back when it ends: a later run or caller in the
same process sees Ray's as they were)."""


def configure_data_context(config: RunConfig) -> Callable[[], None]:
    """Set the run's Ray Data settings; returns what puts them back."""
    from ray.data import DataContext

    context = DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved, level = {name: getattr(context, name) for name in CONTEXT_FIELDS}, logger.level

    def restore() -> None:
        for name, value in saved.items():
            setattr(context, name, value)
        logger.setLevel(level)

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
    return restore


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
    pools = []
    for name, stage in generate_pools(config):
        threads = 2 if name == "generate" and stage.num_gpus > 0 else 1
        pools.append((name, name in ("generate", "decode"), map_kwargs(stage, threads=threads)))
    return pools


def check_gpus(config: RunConfig) -> None:
    """Refuse up front a run needing more GPUs at once than the cluster has (:func:`.require_gpus`)."""
    require_gpus(config, float(ray.cluster_resources().get("GPU", 0.0)))


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


# --------------------------------------------------------------------------- the run's monitor

MONITOR_PATIENCE_S = 30.0
"""How long a stage waits for the monitor's verdict on a batch (a restart takes seconds), then goes on."""


def start_monitor(limits: FailureLimits) -> ActorHandle:
    """The run's monitor, on the driver's node: losing that node ends the run anyway, and no worker node's
    loss can take the monitor with it (Ray would otherwise place it anywhere). ``max_restarts=-1``: a dead
    monitor process is restarted there; ``max_task_retries=-1``: the calls it had not answered are retried.
    ``num_cpus=0``: it only counts, and must not take a CPU from the stages."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    options = {"num_cpus": 0, "scheduling_strategy": here, "max_restarts": -1, "max_task_retries": -1}
    monitor: Any = ray.remote(PolledCounter)  # Any: Ray's stubs do not type options(**dict)
    return monitor.options(**options).remote(limits.max_consecutive, limits.max_rate, limits.rate_after)


class MonitorCalls:
    """What a stage calls after each batch: the monitor's verdict, waiting out a restart or a moment of
    unavailability with a short backoff for at most ``patience_s``, then going on without a verdict (the
    batch is never lost because of the monitor; a stage that gave up once waits only a second next time)."""

    def __init__(self, monitor: ActorHandle, patience_s: float = MONITOR_PATIENCE_S) -> None:
        self.monitor, self.patience_s, self.gave_up = monitor, patience_s, False

    def __call__(self, ok: int, errors: list[str]) -> str | None:
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + (1.0 if self.gave_up else self.patience_s)
        ref, wait = None, 0.25
        while True:
            ref = self.monitor.record.remote(ok, errors) if ref is None else ref
            left = deadline - time.monotonic()
            try:
                verdict, self.gave_up = ray.get(ref, timeout=max(min(wait, left), 0.01)), False
                return verdict
            except GetTimeoutError:
                pass  # still queued: Ray retries it on the restarted monitor, so wait for the same call
            except RayActorError:
                ref = None  # this call is lost: make it again after the backoff
                time.sleep(max(min(wait, left), 0))
            if time.monotonic() >= deadline:
                logging.getLogger(__name__).warning("the run's monitor did not answer: this batch goes on")
                self.gave_up = True
                return None
            wait = min(2 * wait, 4.0)


class MonitorPoll:
    """The driver's poll of the monitor: ``(made, failed)``; the last counts while it does not answer."""

    def __init__(self, monitor: ActorHandle) -> None:
        self.monitor, self.seen = monitor, None

    def __call__(self) -> tuple[int, int]:
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            self.seen = ray.get(self.monitor.poll.remote(self.seen), timeout=10)
        except (GetTimeoutError, RayActorError):
            pass
        return (self.seen[0], self.seen[1]) if self.seen else (0, 0)


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
        self._restore: Callable[[], None] | None = configure_data_context(self.config)

    def close(self) -> None:
        """Ray stays up for a later run in this process (its native log lines still diverted to Ray's log
        directory); the Ray Data settings this run changed are put back."""
        restore = getattr(self, "_restore", None)
        if restore is not None:
            restore()
            self._restore = None

    def check_resources(self) -> None:
        check_gpus(self.config)
        require_cpus(self.config, float(ray.cluster_resources().get("CPU", 0.0)))

    def clean(self, chunks: list[str], output_fs: Any) -> Cleaned:
        stage, task = self.config.stages.clean, self.config.ray.task_num_cpus
        prompts = (
            ray.data.read_parquet(chunks, filesystem=output_fs, num_cpus=task)  # I/O: a fraction of a CPU
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
        lost = prompts.filter(expr=f"{S.LOST_PROMPT} != ''", num_cpus=task).select_columns([S.LOST_PROMPT])
        found = [row[S.LOST_PROMPT] for row in lost.take_all()]  # the prompts cleaning emptied: few
        return Cleaned(prompts, int(prompts.sum(S.EMPTY_CAPTION) or 0), *lost_summary(found))

    def to_encode(self, cleaned: Cleaned, store: EmbeddingStore) -> ToEncode:
        prompts: Dataset = cleaned.prompts
        captions = prompts.map_batches(
            caption_rows,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
            fn_kwargs={"negatives": self.spec.uses_negative},
            batch_format="numpy",
            num_cpus=self.config.stages.clean.num_cpus,
        )
        rows, task = 2 * prompts.count(), self.config.ray.task_num_cpus
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
        stage, task = self.config.stages.encode, self.config.ray.task_num_cpus
        # Sorted by key and kept in order, so each store part covers a narrow key range and a lookup
        # opens few parts; small blocks, so actors work in parallel and parts commit as batches finish.
        # The sort is done before the T5 pool starts: Ray's sort tasks take a whole CPU (see ray_resources).
        ordered = captions.rows.sort(S.CAPTION_KEY).materialize()
        context = ray.data.DataContext.get_current()
        before, context.execution_options.preserve_order = context.execution_options.preserve_order, True
        try:
            small_blocks(ordered, stage.batch_size, task).map_batches(
                stage_class("encode"),
                fn_constructor_kwargs={"spec": self.spec.encode_spec()},
                **map_kwargs(stage),
            ).write_datasink(StoreSink(writer), ray_remote_args={"num_cpus": task})  # I/O, beside T5
        finally:
            context.execution_options.preserve_order = before

    def to_generate(
        self, cleaned: Cleaned, writer: PlanWriter, shards: OutputFormat, dry_run: bool
    ) -> ToGenerate:
        """Everything here runs in Ray workers; the driver only sees counts."""
        from ..expansion import expand_images
        from ..output.writers import PlanWriteResult

        generation, task = self.config.generation, self.config.ray.task_num_cpus
        images = cleaned.prompts.map_batches(
            expand_images,
            fn_kwargs={"images_per_prompt": generation.images_per_prompt, "run_seed": generation.seed},
            batch_format="numpy",
            num_cpus=self.config.stages.clean.num_cpus,
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

        stages, task = self.config.stages, self.config.ray.task_num_cpus
        monitor = start_monitor(limits)
        # A graceful stop (first SIGINT / SIGTERM): the flag file makes the store step and the first model
        # stage return no rows for batches not started; the rest drains, the write bundler flushes its
        # last short bundle, and every counted image is committed (see pixart_batch.stopping).
        flag = StopFlag(writer.output_uri, writer.run_id)
        dataset = (
            # Blocks of one DiT batch: images stream through the stages and shards commit as they
            # finish, instead of a whole sorted partition at a time.
            small_blocks(images.rows, stages.denoise.batch_size, task).map_batches(
                attach_embeddings,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs: the rest
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
            stage = monitored(stage_class(name), MonitorCalls(monitor), report_success=report_success)
            dataset = dataset.map_batches(
                # A stopping run starts no new DiT batch; latents already made are still decoded.
                stoppable(stage, flag) if name in ("generate", "denoise") else stage,
                fn_constructor_kwargs=self.spec.generate_kwargs()
                if name == "generate"
                else {"spec": self.spec.stage_spec(name)},
                **kwargs,
            )
        dataset = dataset.map_batches(
            encode_images,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
            fn_kwargs={
                "image_format": self.config.output.image_format,
                "quality": self.config.output.image_quality,
            },
            batch_size=stages.write.batch_size,
            batch_format="numpy",
            num_cpus=stages.write.num_cpus,  # PNG encoding: CPU work kept off the GPU actors
        )
        sink = ImageSink(writer)
        progress = Progress(images.count, self.config.console.progress_interval_s)
        poll = MonitorPoll(monitor)
        with GracefulStop(lambda: progress.done, flag) as stop, Poller(progress, poll):
            dataset.write_datasink(sink, ray_remote_args={"num_cpus": stages.write.num_cpus})  # as encoding
        progress.update(*poll())
        progress.close()
        stop.raise_if_stopped()
        return sink.total(ImageWriteResult())
