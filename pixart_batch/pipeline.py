"""The Ray executor: wires the stages into Ray Data (``local.py`` runs the same stages in-process
for small runs; :func:`choose_executor` picks).

The driver validates and streams the prompt file into chunks (``OUTPUT/.work/<run>/``);
everything else runs on the workers:

1. **clean**: chunks → diffusers' caption cleaning + size plan (CPU tasks), materialized;
2. **encode**: captions → distinct (groupby) → minus the store (anti-join) → T5 actors →
   store part files (committed atomically by :class:`StoreSink`);
3. **plan**: prompts × images_per_prompt → ``plan/<run>/`` (:class:`PlanSink`) → minus
   committed keys (anti-join on the output format's key files) → sorted by bucket, then caption key;
4. **generate**: attach stored embeddings (CPU tasks) → DiT + VAE actors (one pool with
   ``stages.decode.colocate``, else two) → image encoding (CPU tasks) → shards in the output's
   format, Parquet or WebDataset (:class:`ImageSink`, streamed and committed atomically).

Resource numbers come from the config's ``stages`` section; the comments say why.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from . import schema as S
from .config import RunConfig, StageConfig, config_json
from .dataset import SETTINGS_FILE, STORE_POINTER_FILE, OutputDataset, plan_schema
from .errors import OutputError, SystemicFailure, UserError
from .fast import check_fast_modes
from .ownership import OutputLock, check_ours, write_marker
from .plan import add_sizes, expand_images
from .progress import Poller, Progress, say
from .prompts import scan_prompts
from .sinks import ImageSink, PlanSink, StoreSink
from .spec import CleanSpec, RunSpec
from .store import AttachEmbeddings, EmbeddingStore, StoreIdentity, caption_key

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.actor import ActorHandle
    from ray.data import Dataset

    from .buckets import ModelGeometry
    from .config import GenerationConfig
    from .prompts import PromptScan


def log(message: str) -> None:
    say(message)


# --------------------------------------------------------------------------- Ray setup


def init_ray(config: RunConfig) -> None:
    """Join ``ray.address`` or ``RAY_ADDRESS`` (set by ``ray job submit``), else start a private local
    instance (``address="local"``: never silently join some other Ray running on this machine)."""
    import os

    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    verbose = config.console.verbose
    # Quiet unless --verbose: what Ray writes on the driver's stderr (its INFO and WARNING lines,
    # the core worker's C++ log lines such as the actor-constructor notice) goes to a file in Ray's
    # log directory; the run speaks through its phase lines and its progress line.
    diverted = None if verbose else divert_native_stderr()
    kwargs: dict[str, Any] = {"log_to_driver": verbose}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=config.ray.num_cpus, include_dashboard=False, **kwargs)
    if diverted is not None:
        where = settle_native_stderr(diverted)
        say(f"Ray's log lines: {where} (--verbose shows them here)")
    from .cli import install_signal_handlers

    install_signal_handlers()  # ray.init replaced SIGTERM's handler with its own sys.exit


def divert_native_stderr() -> str | None:
    """Point file descriptor 2 at a temporary file and ``sys.stderr`` at the real stderr: Python
    code (ours, tracebacks) still reaches the console, native and Ray-logger writes do not.
    None when stderr is not a real file (e.g. captured by a test)."""
    import os
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
    import os
    import shutil

    try:
        node = ray._private.worker.global_worker.node
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


def _map_kwargs(stage: StageConfig, threads: int = 1) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- stage functions (CPU tasks)


def clean_and_size(
    batch: dict[str, np.ndarray],
    spec: CleanSpec,
    generation: GenerationConfig,
    geometry: ModelGeometry,
    table: dict[str, list[float]],
) -> dict[str, np.ndarray]:
    """Cleaned captions, their store keys, and the size plan of each staged prompt."""
    from .stages.clean import CaptionCleaner

    batch = CaptionCleaner(spec)(batch)
    batch[S.CAPTION_KEY] = np.array([caption_key(c) for c in batch[S.CAPTION]], dtype=object)
    batch[S.NEGATIVE_KEY] = np.array([caption_key(c) for c in batch[S.NEGATIVE_CAPTION]], dtype=object)
    batch["_empty"] = np.array([not c for c in batch[S.CAPTION]], dtype=np.int64)
    return add_sizes(batch, generation, geometry, table)


def caption_rows(batch: dict[str, np.ndarray], negatives: bool) -> dict[str, np.ndarray]:
    """Every caption a prompt needs encoded: its own and (with CFG on) its negative prompt's."""
    if not negatives:
        return {S.CAPTION_KEY: batch[S.CAPTION_KEY], S.CAPTION: batch[S.CAPTION]}
    return {
        S.CAPTION_KEY: np.concatenate([batch[S.CAPTION_KEY], batch[S.NEGATIVE_KEY]]),
        S.CAPTION: np.concatenate([batch[S.CAPTION], batch[S.NEGATIVE_CAPTION]]),
    }


def first_of_group(table: pa.Table) -> pa.Table:
    """One row per caption key (the input of ``groupby(caption_key).map_groups``)."""
    return table.slice(0, 1)


def attach_embeddings(
    batch: dict[str, np.ndarray], root: str, identity: StoreIdentity, index: list, negatives: bool
) -> dict[str, np.ndarray]:
    return AttachEmbeddings(root, identity, index, negatives)(batch)


def encode_images(batch: dict[str, np.ndarray], image_format: str, quality: int) -> dict[str, np.ndarray]:
    from .stages.write import ImageEncoder

    return ImageEncoder(image_format, quality)(batch)


def _shuffle_partitions(rows: int) -> int:
    """Partitions for an all-to-all step: ~100k small rows each, at least 1, at most 64."""
    return max(1, min(64, math.ceil(rows / 100_000)))


# --------------------------------------------------------------------------- the run


@dataclass
class RunReport:
    prompts: int = 0
    images_planned: int = 0
    images_generated: int = 0
    images_failed: int = 0
    images_skipped: int = 0
    embeddings_encoded: int = 0
    embeddings_reused: int = 0
    images_with_truncated_caption: int = 0
    captions_empty: int = 0
    temporaries_removed: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)
    dry_run: bool = False
    executor: str = ""
    buckets: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_busy_seconds: dict[str, float] = field(default_factory=dict)
    store_bytes_read: int = 0
    """Bytes read from the embedding store by the generate phase (Parquet column chunks and footers)."""
    store_bytes_used: int = 0
    """Embedding bytes those reads were for (each batch's distinct captions and negative prompts)."""
    store_bytes_read_per_image: float = 0.0
    images_per_second: float = 0.0
    """Images per second of the generate phase (model loading included)."""
    images_per_second_overall: float = 0.0
    """Images per second of the whole run, from the driver's start to the report."""
    wall_seconds: float = 0.0
    output: str = ""
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Run:
    """One ``generate`` or ``encode`` run.

    The constructor only reads and checks (prompt file, checkpoint, settings guard), so bad
    input fails before Ray starts and before anything is written. :meth:`start` writes.
    """

    executor = "ray"

    def __init__(
        self,
        config: RunConfig,
        prompts: str,
        output: str,
        on_phase: Callable[[str], None] = log,
        scan: PromptScan | None = None,
    ) -> None:
        self.config = config
        self.prompts_path = prompts
        self.log = on_phase
        self.started = time.time()
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started)) + uuid.uuid4().hex[:6]
        self.report = RunReport()
        self.scan = scan if scan is not None else scan_prompts(prompts)
        self.report.executor = self.executor
        if config.model.clean_caption:
            from .stages.clean import require_cleaning_dependencies

            require_cleaning_dependencies()
        check_quantization(config)
        check_fast_modes(config)
        self.spec = RunSpec.build(config)
        check_sizes(self.spec, self.scan)
        self.identity = self.spec.store_identity()
        self.output = OutputDataset(output, config.output.format)
        check_ours(self.output.location)
        self.output.validate_metadata()
        self.output.check_settings(self.spec.settings())
        self.store_root = config.output.store or self.output.location.uri.rstrip("/") + "/embeddings"
        self.report.output = self.output.uri
        self.report.prompts = self.scan.count
        self.lock = OutputLock(self.output.location, self.run_id)

    def hold(self) -> OutputLock:
        """Take the output (one writer at a time), mark it ours, and re-check what could have changed
        while another run held it. Nothing is written before this."""
        self.lock.acquire()
        if self.lock.took_over:
            self.log(f"took over the output from a run that stopped answering ({self.lock.took_over})")
        try:
            check_ours(self.output.location)
            # The marker is the first thing written, right under the lock: a run starting beside this
            # one then finds an output that is ours (and the lock held), never a half-made folder
            # it would take for someone else's.
            try:
                write_marker(self.output.location)
            except OSError as exc:
                raise OutputError(f"{self.output.uri}: output is not writable ({exc.strerror or exc})") from None
            self.output.check_settings(self.spec.settings())
            self.output.check_writable()
        except BaseException:
            self.lock.release()
            raise
        return self.lock

    def start(self) -> None:
        """Check the stages can run here, then prepare the output and stage the prompts."""
        self.check_resources()
        self.report.temporaries_removed = self.output.prepare()
        self.output.write_json(SETTINGS_FILE, self.spec.settings())
        self.store = EmbeddingStore(self.store_root, self.identity).open()
        self.report.temporaries_removed += self.store.remove_temporaries()
        self.report.store = self.store.uri
        self.output.write_json(STORE_POINTER_FILE, {"uri": self.store_pointer()})
        self.set_aside_damaged()
        try:
            self.chunks = self.output.stage_prompts(self.run_id, self.scan, self.config.generation.negative_prompt)
        except BaseException:
            self.output.remove_work(self.run_id)
            raise

    def check_resources(self) -> None:
        check_gpus(self.config)

    def store_pointer(self) -> str:
        """The store's URI, relative when the store lives inside the output (a copied or moved output
        is self-contained)."""
        inside = self.output.location.uri.rstrip("/") + "/"
        return self.store.uri[len(inside) :] if self.store.uri.startswith(inside) else self.store.uri

    def set_aside_damaged(self) -> None:
        """Move shards, store parts and failure files that cannot be read whole to ``quarantine/``;
        their images and embeddings are planned again like any missing ones."""
        for shard in self.output.format.find_damaged():  # a shard goes aside with its companions (a tar's key index)
            target = self.output.format.quarantine(shard, self.run_id)
            self.report.quarantined.append({"file": shard.path, "reason": shard.reason, "moved_to": target})
            self.log(f"damaged file set aside: {shard.path} ({shard.reason}) -> {target}")
        damaged = [(d, self.output.location) for d in self.output.find_damaged(self.output.failure_files(), S.KEY)]
        parts = self.store.part_files()
        inside = self.store.location.is_local == self.output.location.is_local and self.store.uri.startswith(
            self.output.uri.rstrip("/") + "/"
        )
        store_base = self.output.location if inside else self.store.location  # OUTPUT/quarantine/ for the output's own store
        damaged += [(d, store_base) for d in self.output.find_damaged(parts, S.CAPTION_KEY, self.store.location)]
        for item, location in damaged:
            target = self.output.quarantine(item, self.run_id, location)
            self.report.quarantined.append({"file": item.path, "reason": item.reason, "moved_to": target})
            self.log(f"damaged file set aside: {item.path} ({item.reason}) -> {target}")

    # -- phase 1
    def clean(self) -> None:
        stage = self.config.stages.clean
        start = time.perf_counter()
        self.prompts = (
            ray.data.read_parquet(self.chunks, filesystem=self.output.location.fs)
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
        self.report.captions_empty = int(self.prompts.sum("_empty") or 0)
        self.report.stage_seconds["clean"] = time.perf_counter() - start
        self.log(f"cleaned {self.scan.count} prompts ({self.report.captions_empty} cleaned to empty text)")

    def encode(self) -> None:
        start = time.perf_counter()
        captions = self.prompts.map_batches(
            caption_rows,
            fn_kwargs={"negatives": self.spec.uses_negative},
            batch_format="numpy",
            num_cpus=self.config.stages.clean.num_cpus,
        )
        partitions = _shuffle_partitions(2 * self.scan.count)
        distinct = (
            captions.groupby(S.CAPTION_KEY, num_partitions=partitions)
            .map_groups(first_of_group, batch_format="pyarrow")
            .materialize()
        )
        wanted = distinct.count()
        parts = self.store.part_files()
        todo = distinct
        if parts:
            known = ray.data.read_parquet(parts, filesystem=self.store.location.fs).select_columns([S.CAPTION_KEY])
            todo = distinct.join(known, join_type="left_anti", num_partitions=partitions, on=(S.CAPTION_KEY,)).materialize()
        self.report.embeddings_encoded = todo.count()
        self.report.embeddings_reused = wanted - self.report.embeddings_encoded
        self.log(
            f"embedding store {self.store.uri}: {self.report.embeddings_encoded} captions to encode, "
            f"{self.report.embeddings_reused} reused"
        )
        if self.report.embeddings_encoded:
            stage = self.config.stages.encode
            # Sorted by key and kept in order, so each store part covers a narrow key range and a
            # lookup opens few parts; small blocks, so actors work in parallel and parts commit
            # as batches finish.
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            try:
                self._encode(todo.sort(S.CAPTION_KEY), stage)
            finally:
                context.execution_options.preserve_order = False
        self.report.stage_seconds["encode"] = time.perf_counter() - start

    def _encode(self, todo: Dataset, stage: StageConfig) -> None:
        """T5 actors over the captions to encode, into committed store parts."""
        todo.repartition(target_num_rows_per_block=stage.batch_size).map_batches(
            _stage_class("encode"),
            fn_constructor_kwargs={"spec": self.spec.encode_spec()},
            **_map_kwargs(stage),
        ).write_datasink(StoreSink(self.store_root, self.identity, rows_per_part=self.config.output.store_rows_per_part))

    # -- phase 2
    def plan(self, dry_run: bool = False) -> Dataset | None:
        """The images still to make (planned minus committed), sorted by bucket, as a dataset.

        The whole plan is written to ``OUTPUT/plan/<run>/`` for ``status`` and ``verify``.
        Everything here runs in Ray workers; the driver only sees counts.
        """
        generation = self.config.generation
        start = time.perf_counter()
        images = self.prompts.map_batches(
            expand_images,
            fn_kwargs={"images_per_prompt": generation.images_per_prompt, "run_seed": generation.seed},
            batch_format="numpy",
            num_cpus=self.config.stages.clean.num_cpus,
        ).materialize()
        plan_sink = PlanSink(self.output.uri, self.run_id)
        images.select_columns(list(plan_schema().names)).write_datasink(plan_sink)
        buckets: Counter = Counter()
        for result in getattr(plan_sink, "results", []):
            buckets.update(result["buckets"])
            self.report.images_planned += result["rows"]
        self.output.commit_plan(self.run_id, self.report.images_planned, dry_run=dry_run)
        key_files = self.output.format.key_files()  # Parquet with a key column, whatever the format
        remaining = images
        if key_files:
            committed = ray.data.read_parquet(key_files, filesystem=self.output.location.fs).select_columns([S.KEY])
            partitions = _shuffle_partitions(self.report.images_planned)
            remaining = remaining.join(committed, join_type="left_anti", num_partitions=partitions, on=(S.KEY,))
        if not dry_run:
            # By bucket (one shape per DiT batch), then by caption key: a batch's embeddings sit together
            # in the store (sorted by caption key), so lookups read about what they use.
            remaining = remaining.sort([S.BUCKET_HEIGHT, S.BUCKET_WIDTH, S.CAPTION_KEY, S.KEY]).materialize()
        todo = self.todo = remaining.count()
        self.planned(todo, buckets, start, dry_run)
        return remaining if todo and not dry_run else None

    def planned(self, todo: int, buckets: Counter, start: float, dry_run: bool) -> None:
        """Report and log a plan: ``todo`` of ``report.images_planned`` images left to make."""
        self.report.images_skipped = self.report.images_planned - todo
        self.report.buckets = dict(sorted(buckets.items()))
        self.report.stage_seconds["plan"] = time.perf_counter() - start
        self.log(
            f"{'dry run: ' if dry_run else ''}planned {self.report.images_planned} images in {len(buckets)} buckets; "
            f"{todo} to generate, {self.report.images_skipped} already done"
        )

    def generate(self, remaining: Dataset | None) -> None:
        if remaining is None:
            return
        stages = self.config.stages
        start = time.perf_counter()
        limits = self.config.failures
        monitor = FailureMonitor.remote(limits.max_consecutive, limits.max_rate, limits.rate_after)
        dataset = (
            # Blocks of one DiT batch: images stream through the stages and shards commit as they
            # finish, instead of a whole sorted partition at a time.
            remaining.repartition(target_num_rows_per_block=stages.denoise.batch_size).map_batches(
                attach_embeddings,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
                fn_kwargs={
                    "root": self.store_root,
                    "identity": self.identity,
                    "index": self.store.index(),
                    "negatives": self.spec.uses_negative,
                },
                batch_size=stages.denoise.batch_size,
                batch_format="numpy",
                num_cpus=stages.clean.num_cpus,  # I/O-bound reads of the store
            )
        )
        for name, report_success, kwargs in model_pools(self.config):
            dataset = dataset.map_batches(
                _monitored(_stage_class(name), _remote_record(monitor), report_success=report_success),
                fn_constructor_kwargs=self.spec.generate_kwargs() if name == "generate" else {"spec": self.spec.stage_spec(name)},
                **kwargs,
            )
        dataset = dataset.map_batches(
            encode_images,  # type: ignore[arg-type]  # Ray types fn as fn(batch); fn_kwargs supplies the rest
            fn_kwargs={"image_format": self.config.output.image_format, "quality": self.config.output.image_quality},
            batch_size=stages.write.batch_size,
            batch_format="numpy",
            num_cpus=stages.write.num_cpus,  # PNG encoding: CPU work kept off the GPU actors
        )
        sink = self.image_sink()
        progress = Progress(self.todo, self.config.console.progress_interval_s)
        with Poller(progress, lambda: ray.get(monitor.counts.remote())):
            dataset.write_datasink(sink)
        progress.update(*ray.get(monitor.counts.remote()))
        progress.close()
        self.generated(getattr(sink, "results", []), start)

    def image_sink(self) -> ImageSink:
        output = self.config.output
        return ImageSink(
            self.output.uri,
            self.run_id,
            self.spec.row_constants(),
            self.spec.settings(),
            output.rows_per_shard,
            output.row_group_size,
            output.format,
        )

    def generated(self, results: list[dict[str, Any]], start: float) -> None:
        """Add up the write tasks' results (:meth:`ImageSink.write`) into the report."""
        elapsed = time.perf_counter() - start
        busy: Counter = Counter()
        for result in results:
            busy.update(result["busy_s"])
            self.report.store_bytes_read += result.get("store_bytes_read", 0)
            self.report.store_bytes_used += result.get("store_bytes_used", 0)
            self.report.images_generated += result["rows"]
            self.report.images_with_truncated_caption += result["truncated"]
            self.report.images_failed += result["failed"]
        self.report.stage_seconds["generate"] = elapsed
        self.report.stage_busy_seconds = {k: round(v, 3) for k, v in busy.items()}
        self.report.images_per_second = self.report.images_generated / elapsed if elapsed > 0 else 0.0

    def finish(self) -> dict[str, Any]:
        self.output.remove_work(self.run_id)
        self.report.wall_seconds = round(time.time() - self.started, 3)
        wall = self.report.wall_seconds
        made = self.report.images_generated
        self.report.store_bytes_read_per_image = round(self.report.store_bytes_read / made, 1) if made else 0.0
        self.report.images_per_second_overall = self.report.images_generated / wall if wall > 0 else 0.0
        self.report.stage_seconds = {k: round(v, 3) for k, v in self.report.stage_seconds.items()}
        report = self.report.to_dict()
        self.output.write_json("run_report.json", report)
        self.output.write_json("run_config.json", json.loads(config_json(self.config)))
        return report


def model_pools(config: RunConfig) -> list[tuple[str, bool, dict[str, Any]]]:
    """The actor pools of the generate phase: ``(stage, reports successes, Ray arguments)``.

    With ``stages.decode.colocate`` one pool of DiT + VAE actors sized by ``stages.denoise``,
    two batches in flight per GPU actor (the VAE of one overlaps the DiT of the next); else a
    DiT pool and a VAE pool."""
    stages = config.stages
    if stages.decode.colocate:
        return [("generate", True, _map_kwargs(stages.denoise, threads=2 if stages.denoise.num_gpus > 0 else 1))]
    return [("denoise", False, _map_kwargs(stages.denoise)), ("decode", True, _map_kwargs(stages.decode))]


def check_gpus(config: RunConfig) -> None:
    """Refuse up front a run whose stages need more GPUs at once than the cluster has.

    The encode phase runs alone; DiT and VAE actors run together. Each pool needs its
    minimum size × ``num_gpus`` to start.
    """
    available = float(ray.cluster_resources().get("GPU", 0.0))
    stages = config.stages
    phases: dict[str, list[tuple[str, StageConfig]]] = {
        "encode": [("encode", stages.encode)],
        "generate": [("denoise", stages.denoise)] + ([] if stages.decode.colocate else [("decode", stages.decode)]),
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


def check_quantization(config: RunConfig) -> None:
    """Refuse up front a T5 quantization this environment cannot run (not inside an actor, restarted forever)."""
    import importlib.util

    stage = config.stages.encode
    needs = {
        "int8": ("torchao", "pip install torchao"),
        "bnb-int8": ("bitsandbytes", "pip install bitsandbytes"),
        "bnb-nf4": ("bitsandbytes", "pip install bitsandbytes"),
    }.get(stage.quantization)
    if needs is None:
        return
    module, hint = needs
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"stages.encode.quantization {stage.quantization} needs {module} ({hint}, or pip install -e '.[lowvram]')"
        )
    if stage.quantization.startswith("bnb") and stage.num_gpus <= 0:
        raise UserError(
            f"stages.encode.quantization {stage.quantization}: bitsandbytes runs on CUDA only; "
            "set stages.encode.num_gpus or use int8"
        )


MAX_SIDE_FACTOR = 4
"""The largest image side accepted: this many times the model's native side (4096 px for PixArt-XL-2-1024);
beyond it a decode needs tens of GB per image and no bucket is near the requested shape."""


def check_sizes(spec: RunSpec, scan: PromptScan) -> None:
    """Refuse before anything starts: steps the scheduler cannot run and sizes beyond what the model can make."""
    generation = spec.config.generation
    limit = MAX_SIDE_FACTOR * spec.geometry.native_size
    sides = [("generation.width", generation.width), ("generation.height", generation.height)]
    if scan.largest_side:
        side, where = scan.largest_side
        sides.append((f"{where}: requested size", side))
    for name, value in sides:
        if value is not None and value > limit:
            raise UserError(
                f"{name}: {value} px is larger than {limit} px, the most this model makes "
                f"({MAX_SIDE_FACTOR}x its native {spec.geometry.native_size} px side)"
            )
    steps_limit = spec.max_steps
    if generation.num_inference_steps > steps_limit:
        raise UserError(
            f"generation.num_inference_steps: {generation.num_inference_steps} is more than {spec.scheduler_class} "
            f"accepts for this checkpoint ({steps_limit})"
        )


class FailureCounter:
    """Counts finished and failed images across every actor of the run; says when to stop."""

    def __init__(self, max_consecutive: int, max_rate: float, rate_after: int) -> None:
        self.max_consecutive, self.max_rate, self.rate_after = max_consecutive, max_rate, rate_after
        self.ok = self.failed = self.consecutive = 0
        self.errors: Counter = Counter()

    def counts(self) -> tuple[int, int]:
        """Images finished so far: (made, failed)."""
        return self.ok, self.failed

    def record(self, ok: int, errors: list[str]) -> str | None:
        """Outcomes of one batch (failures first, then successes); a stop message, or None."""
        for error in errors:
            self.failed += 1
            self.consecutive += 1
            self.errors[_error_kind(error)] += 1
        if ok:
            self.ok += ok
            self.consecutive = 0
        finished = self.ok + self.failed
        rate = self.failed / finished if finished else 0.0
        if self.failed and (self.consecutive >= self.max_consecutive or (finished >= self.rate_after and rate > self.max_rate)):
            error, count = self.errors.most_common(1)[0]
            return (
                f"stopped: {self.failed} of {finished} images failed ({self.consecutive} in a row; limits: "
                f"failures.max_consecutive {self.max_consecutive}, failures.max_rate {self.max_rate:g}); most common error "
                f"({count}x): {error} — committed images are kept; fix the cause and re-run the same command to resume"
            )
        return None


FailureMonitor: Any = ray.remote(num_cpus=0)(FailureCounter)
"""One :class:`FailureCounter` for every actor of a Ray run."""


def _error_kind(error: str) -> str:
    """An error message without what varies per image (keys, numbers), to find the most common cause."""
    import re

    return re.sub(r"\bp[0-9a-f]{16}(-\d+)?(-\d{5})?\b", "<key>", error)[:300]


def _remote_record(monitor: ActorHandle) -> Callable[[int, list[str]], str | None]:
    def record(ok: int, errors: list[str]) -> str | None:
        return ray.get(monitor.record.remote(ok, errors))

    return record


def _monitored(stage_cls: type, record: Callable[[int, list[str]], str | None], report_success: bool) -> type:
    """The stage class, reporting each batch's new failures (and, for the last model stage, its
    successes) to the run's :class:`FailureCounter` through ``record``; raises :class:`SystemicFailure`
    when told to stop. Keeps the stage's name (Ray shows it as ``MapBatches(<name>)``)."""

    class Monitored(stage_cls):
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            failed_before = batch[S.ERROR].astype(bool).copy()
            out = super().__call__(batch)
            new = [str(e) for e, was in zip(out[S.ERROR], failed_before, strict=True) if e and not was]
            ok = int(sum(1 for e in out[S.ERROR] if not e)) if report_success else 0
            verdict = record(ok, new)
            if verdict:
                raise SystemicFailure(verdict)
            return out

    Monitored.__name__ = Monitored.__qualname__ = stage_cls.__name__
    return Monitored


def _stage_class(name: str) -> type:
    if name == "encode":
        from .stages.encode import TextEncoder

        return TextEncoder
    if name == "denoise":
        from .stages.denoise import Denoiser

        return Denoiser
    if name == "generate":
        from .stages.generate import DenoiseDecode

        return DenoiseDecode
    from .stages.decode import Decoder

    return Decoder


def run_generate(
    config: RunConfig, prompts: str, output: str, encode_only: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """The whole pipeline (or only the embedding store with ``encode_only``, or only the plan with
    ``dry_run``); returns the run report."""
    run = make_run(config, prompts, output)
    run.report.dry_run = dry_run
    with run.hold():
        if run.executor == "ray":
            init_ray(config)
            configure_data_context(config)
        run.start()
        run.clean()
        if dry_run:
            run.plan(dry_run=True)
            return _finish(run)
        run.encode()
        if not encode_only:
            run.generate(run.plan())
            run.output.write_card(run.spec.settings(), {"images_total": run.report.images_planned, "prompts": run.report.prompts})
        return _finish(run)


def choose_executor(config: RunConfig, planned_images: int) -> str:
    """``ray.executor``, with ``auto`` resolved: in-process for a small run that joins no cluster."""
    import os

    if config.ray.executor != "auto":
        return config.ray.executor
    if config.ray.address or os.environ.get("RAY_ADDRESS"):
        return "ray"
    return "local" if planned_images <= config.ray.local_max_images else "ray"


def make_run(config: RunConfig, prompts: str, output: str) -> Run:
    """The run, checked, with the executor that will carry it out (before anything is written)."""
    scan = scan_prompts(prompts)
    if choose_executor(config, scan.count * config.generation.images_per_prompt) == "local":
        from .local import LocalRun

        return LocalRun(config, prompts, output, scan=scan)
    return Run(config, prompts, output, scan=scan)


def _finish(run: Run) -> dict[str, Any]:
    report = run.finish()
    if report["dry_run"]:
        run.log(
            f"dry run done: {report['images_planned']} images planned in {len(report['buckets'])} buckets, "
            f"{report['images_skipped']} already made; nothing generated (plan in {run.output.uri}/plan/)"
        )
        return report
    failed = f", {report['images_failed']} failed" if report["images_failed"] else ""
    run.log(
        f"done in {report['wall_seconds']:.1f} s: {report['images_generated']} images generated{failed}, "
        f"{report['images_skipped']} skipped, {report['embeddings_encoded']} captions encoded, "
        f"{report['embeddings_reused']} reused; {report['images_per_second']:.2f} images/s while generating, "
        f"{report['images_per_second_overall']:.2f} images/s overall ({run.executor} executor) -> {run.output.uri}"
    )
    return report
