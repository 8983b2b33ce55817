"""Wires the stages into Ray Data. The only module that knows about Ray.

Two phases, each a streaming Ray Data pipeline:

1. **encode**: prompts → clean (CPU tasks) → distinct captions not yet in the store →
   T5 actors → store part files (committed atomically by :class:`StoreSink`);
2. **generate**: plan (prompts × images, minus keys already in the output) sorted by
   bucket → attach stored embeddings (CPU tasks) → DiT actors → VAE actors → image
   encoding (CPU tasks) → Parquet shards (:class:`ImageSink`).

Resource numbers come from the config's ``stages`` section; the comments say why.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from . import schema as S
from .buckets import aspect_ratio_table, read_model_geometry
from .config import RunConfig, StageConfig, config_json
from .dataset import SETTINGS_FILE, STORE_POINTER_FILE, OutputDataset
from .errors import UserError
from .models import checkpoint_identity, encoder_identity, resolve_model, scheduler_name
from .plan import MAX_IMAGES_PER_PROMPT, image_key, image_seed, plan_size
from .prompts import read_prompts
from .store import AttachEmbeddings, EmbeddingStore, StoreIdentity, caption_key

STORE_COLUMNS = (S.CAPTION_KEY, S.CAPTION, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING)
BUSY_COLUMNS = {"encode": "_busy_encode_s", "denoise": "_busy_denoise_s", "decode": "_busy_decode_s", "write": "_busy_write_s"}


def log(message: str) -> None:
    print(f"[pixart-batch] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- Ray setup


def init_ray(config: RunConfig) -> None:
    """Join ``ray.address`` or ``RAY_ADDRESS`` (set by ``ray job submit``), else start a private local
    instance (``address="local"``: never silently join some other Ray running on this machine)."""
    import os

    import ray

    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=config.ray.num_cpus, include_dashboard=False, log_to_driver=True)


def configure_data_context(config: RunConfig) -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = True
    # A deadlock (e.g. actors holding every CPU) must fail the run instead of hanging it.
    context.execution_no_progress_timeout_s = config.ray.no_progress_timeout_s
    # Keep the order of the plan (sorted by bucket) so DiT batches rarely mix buckets.
    context.execution_options.preserve_order = True


def _map_kwargs(stage: StageConfig) -> dict[str, Any]:
    """Ray arguments for an actor stage."""
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
    }


def _blocks_for(rows: int, batch_size: int) -> int:
    """Enough blocks that the stages stream (a block ~ two batches), never more than rows."""
    return max(1, min(rows, math.ceil(rows / max(2 * batch_size, 1))))


# --------------------------------------------------------------------------- sinks


def _batches(blocks: Iterable[Any]) -> Iterable[dict[str, np.ndarray]]:
    from ray.data.block import BlockAccessor

    for block in blocks:
        accessor = BlockAccessor.for_block(block)
        if accessor.num_rows():
            yield accessor.to_batch_format("numpy")


def _concat(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def _make_sinks():
    from ray.data import Datasink

    class StoreSink(Datasink):
        """Writes each task's encoded captions as one store part file, committed atomically."""

        def __init__(self, root: str, identity: StoreIdentity, rows_per_part: int) -> None:
            self.root, self.identity, self.rows_per_part = root, identity, rows_per_part

        @property
        def min_rows_per_write(self) -> int:
            return self.rows_per_part

        def write(self, blocks, ctx) -> dict[str, Any]:
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

        def __init__(self, output_uri: str, run_id: str, constants: dict[str, Any], rows_per_shard: int, row_group_size: int) -> None:
            self.output_uri, self.run_id, self.constants = output_uri, run_id, constants
            self.rows_per_shard, self.row_group_size = rows_per_shard, row_group_size

        @property
        def min_rows_per_write(self) -> int:
            return self.rows_per_shard

        def write(self, blocks, ctx) -> dict[str, Any]:
            import pyarrow as pa

            output = OutputDataset(self.output_uri)
            result: dict[str, Any] = {"rows": 0, "failed": 0, "files": 0, "bytes": 0, "truncated": 0, "busy_s": Counter(), "buckets": Counter()}
            batches = list(_batches(blocks))
            if not batches:
                return result
            everything = _concat(batches)
            for stage, column in BUSY_COLUMNS.items():
                if column in everything:
                    result["busy_s"][stage] += float(everything[column].sum())
            failed = everything[S.ERROR].astype(bool)
            if failed.any():
                rows = {name: everything[name][failed].tolist() for name in (S.KEY, S.PROMPT_ID, S.IMAGE_INDEX, S.ERROR)}
                rows["run"] = [self.run_id] * int(failed.sum())
                output.write_failures(pa.table(rows), f"failures-{self.run_id}-{ctx.task_idx:05d}.parquet")
                result["failed"] = int(failed.sum())
                for key, error in zip(rows[S.KEY], rows[S.ERROR]):
                    log(f"failed {key}: {error}")
            healthy = {name: column[~failed] for name, column in everything.items()}
            total = len(healthy[S.KEY])
            for start in range(0, total, self.rows_per_shard):
                batch = {name: column[start : start + self.rows_per_shard] for name, column in healthy.items()}
                rows_in_shard = len(batch[S.KEY])
                name = f"train-{self.run_id}-{ctx.task_idx:05d}-{result['files']:04d}.parquet"
                result["bytes"] += output.write_shard(output.to_table(batch, self.constants), name, self.row_group_size)
                result["files"] += 1
                result["rows"] += rows_in_shard
                result["truncated"] += int(batch[S.TRUNCATED].sum())
                result["buckets"].update(f"{h}x{w}" for h, w in zip(batch[S.BUCKET_HEIGHT], batch[S.BUCKET_WIDTH]))
                log(f"committed {name} ({rows_in_shard} images)")
            return result

        def on_write_complete(self, write_result) -> None:
            # Runs on the driver: keep each write task's counts for the run report.
            self.results = list(write_result.write_returns)

    return StoreSink, ImageSink


# --------------------------------------------------------------------------- stage functions (CPU tasks)


def clean_batch(batch: dict[str, np.ndarray], clean_caption: bool) -> dict[str, np.ndarray]:
    from .stages.clean import CaptionCleaner

    return CaptionCleaner(clean_caption)(batch)


def attach_embeddings(batch: dict[str, np.ndarray], root: str, identity: StoreIdentity) -> dict[str, np.ndarray]:
    return AttachEmbeddings(root, identity)(batch)


def encode_images(batch: dict[str, np.ndarray], image_format: str, quality: int) -> dict[str, np.ndarray]:
    from .stages.write import ImageEncoder

    return ImageEncoder(image_format, quality)(batch)


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
    buckets: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_busy_seconds: dict[str, float] = field(default_factory=dict)
    images_per_second: float = 0.0
    wall_seconds: float = 0.0
    output: str = ""
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Run:
    """One ``generate`` or ``encode`` run. Everything that can be checked is checked before Ray starts."""

    def __init__(self, config: RunConfig, prompts: str, output: str, on_phase: Callable[[str], None] = log) -> None:
        self.config = config
        self.prompts_path = prompts
        self.log = on_phase
        self.started = time.time()
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started)) + uuid.uuid4().hex[:6]
        self.report = RunReport()
        self.records = read_prompts(prompts)
        if len(self.records) * config.generation.images_per_prompt > 0 and config.generation.images_per_prompt > MAX_IMAGES_PER_PROMPT:
            raise UserError(f"generation.images_per_prompt: at most {MAX_IMAGES_PER_PROMPT}")
        if config.model.clean_caption:
            from .stages.clean import require_cleaning_dependencies

            require_cleaning_dependencies()
        self.model = resolve_model(config.model)
        self.geometry = read_model_geometry(self.model.local_dir)
        self.table = aspect_ratio_table(self.geometry.sample_size)
        self.sizes = {r.prompt_id: plan_size(r, config.generation, self.geometry, self.table) for r in self.records}
        self.identity = StoreIdentity(
            encoder=encoder_identity(self.model),
            max_sequence_length=config.model.max_sequence_length,
            clean_caption=config.model.clean_caption,
            dtype=config.stages.encode.dtype,
            d_model=self.geometry.text_dim,
        )
        self.output = OutputDataset(output)
        # Everything above only read; the guard decides before anything is written.
        self.output.check_settings(self.settings())
        self.report.output = self.output.uri
        self.report.prompts = len(self.records)
        self.report.temporaries_removed = self.output.prepare()
        self.output.write_json(SETTINGS_FILE, self.settings())
        self.store_root = config.output.store or self.output.location.uri.rstrip("/") + "/embeddings"
        self.store = EmbeddingStore(self.store_root, self.identity).open()
        self.report.temporaries_removed += self.store.remove_temporaries()
        self.report.store = self.store.uri
        self.output.write_json(STORE_POINTER_FILE, {"uri": self.store.uri})
        self.captions: dict[str, tuple[str, str]] = {}

    # -- phase 1
    def clean(self) -> None:
        import ray

        stage = self.config.stages.clean
        negative_default = self.config.generation.negative_prompt
        items = [
            {S.PROMPT_ID: r.prompt_id, S.PROMPT: r.prompt, S.NEGATIVE_PROMPT: r.negative_prompt if r.negative_prompt is not None else negative_default}
            for r in self.records
        ]
        start = time.perf_counter()
        dataset = ray.data.from_items(items, override_num_blocks=_blocks_for(len(items), stage.batch_size)).map_batches(
            clean_batch,
            fn_kwargs={"clean_caption": self.config.model.clean_caption},
            batch_size=stage.batch_size,
            batch_format="numpy",
            num_cpus=stage.num_cpus,  # cheap text work: a fraction of a CPU so it never starves actors
        )
        for row in dataset.iter_rows():
            self.captions[row[S.PROMPT_ID]] = (row[S.CAPTION], row[S.NEGATIVE_CAPTION])
        self.report.stage_seconds["clean"] = time.perf_counter() - start
        self.report.captions_empty = sum(1 for caption, _ in self.captions.values() if not caption)
        self.log(f"cleaned {len(self.captions)} prompts ({self.report.captions_empty} cleaned to empty text)")

    def encode(self) -> None:
        import ray

        wanted: dict[str, str] = {}
        for caption, negative in self.captions.values():
            wanted[caption_key(caption)] = caption
            wanted[caption_key(negative)] = negative
        known = self.store.known_keys()
        todo = [{S.CAPTION_KEY: k, S.CAPTION: c} for k, c in wanted.items() if k not in known]
        todo.sort(key=lambda row: len(row[S.CAPTION]))  # similar lengths per batch: little padding
        self.report.embeddings_reused = len(wanted) - len(todo)
        self.report.embeddings_encoded = len(todo)
        self.log(f"embedding store {self.store.uri}: {len(todo)} captions to encode, {self.report.embeddings_reused} reused")
        start = time.perf_counter()
        if todo:
            stage = self.config.stages.encode
            StoreSink, _ = _make_sinks()
            (
                ray.data.from_items(todo, override_num_blocks=_blocks_for(len(todo), stage.batch_size))
                .map_batches(
                    _stage_class("encode"),
                    fn_constructor_kwargs={
                        "model": self.model.name,
                        "dtype": stage.dtype,
                        "device": stage.device,
                        "max_sequence_length": self.config.model.max_sequence_length,
                    },
                    **_map_kwargs(stage),
                )
                .write_datasink(StoreSink(self.store_root, self.identity, rows_per_part=self.config.output.store_rows_per_part))
            )
        self.report.stage_seconds["encode"] = time.perf_counter() - start

    # -- phase 2
    def plan(self) -> list[dict[str, Any]]:
        """Rows of the images still to make (planned minus committed), sorted by bucket.

        The whole plan (every planned key) is written to ``OUTPUT/plan.parquet`` for
        ``status`` and ``verify``.
        """
        import pyarrow as pa

        generation = self.config.generation
        committed = self.output.committed_keys()
        rows = []
        planned: dict[str, list] = {name: [] for name in ("key", "prompt_id", "image_index", "caption_key", "negative_key", "bucket_height", "bucket_width")}
        buckets: Counter = Counter()
        for record in self.records:
            caption, negative = self.captions[record.prompt_id]
            size = self.sizes[record.prompt_id]
            for index in range(generation.images_per_prompt):
                row = {
                    S.KEY: image_key(record.prompt_id, index),
                    S.PROMPT_ID: record.prompt_id,
                    S.IMAGE_INDEX: index,
                    S.CAPTION_KEY: caption_key(caption),
                    S.NEGATIVE_KEY: caption_key(negative),
                    S.BUCKET_HEIGHT: size.bucket_height,
                    S.BUCKET_WIDTH: size.bucket_width,
                }
                for name in planned:
                    planned[name].append(row[name])
                buckets[f"{size.bucket_height}x{size.bucket_width}"] += 1
                if row[S.KEY] in committed:
                    continue
                row.update(
                    {
                        S.PROMPT: record.prompt,
                        S.CAPTION: caption,
                        S.NEGATIVE_PROMPT: record.negative_prompt if record.negative_prompt is not None else generation.negative_prompt,
                        S.NEGATIVE_CAPTION: negative,
                        S.SEED: image_seed(generation.seed, record.prompt_id, index),
                        S.WIDTH: size.width,
                        S.HEIGHT: size.height,
                        S.ERROR: "",
                    }
                )
                rows.append(row)
        self.output.write_plan(pa.table(planned))
        rows.sort(key=lambda row: (row[S.BUCKET_HEIGHT], row[S.BUCKET_WIDTH], row[S.KEY]))
        self.report.images_planned = len(planned["key"])
        self.report.images_skipped = self.report.images_planned - len(rows)
        self.report.buckets = dict(sorted(buckets.items()))
        self.log(f"planned {self.report.images_planned} images in {len(buckets)} buckets; {len(rows)} to generate, {self.report.images_skipped} already done")
        return rows

    def constants(self) -> dict[str, Any]:
        generation = self.config.generation
        return {
            S.STEPS: generation.num_inference_steps,
            S.GUIDANCE: generation.guidance_scale,
            S.MODEL: self.model.name,
            S.SCHEDULER: scheduler_name(self.model),
            S.DTYPE: self.config.stages.denoise.dtype,
            S.MAX_SEQ_LEN: self.config.model.max_sequence_length,
            S.IMAGE_FORMAT: self.config.output.image_format,
        }

    def generate(self, rows: list[dict[str, Any]]) -> None:
        import ray

        if not rows:
            return
        stages = self.config.stages
        generation = self.config.generation
        _, ImageSink = _make_sinks()
        run_id = self.run_id
        start = time.perf_counter()
        dataset = (
            ray.data.from_items(rows, override_num_blocks=_blocks_for(len(rows), stages.denoise.batch_size))
            .map_batches(
                attach_embeddings,
                fn_kwargs={"root": self.store_root, "identity": self.identity},
                batch_size=stages.denoise.batch_size,
                batch_format="numpy",
                num_cpus=stages.clean.num_cpus,  # I/O-bound reads of the store
            )
            .map_batches(
                _stage_class("denoise"),
                fn_constructor_kwargs={
                    "model": self.model.name,
                    "dtype": stages.denoise.dtype,
                    "device": stages.denoise.device,
                    "embedding_dtype": stages.encode.dtype,
                    "d_model": self.geometry.text_dim,
                    "vae_scale_factor": self.geometry.vae_scale_factor,
                    "num_inference_steps": generation.num_inference_steps,
                    "guidance_scale": generation.guidance_scale,
                },
                **_map_kwargs(stages.denoise),
            )
            .map_batches(
                _stage_class("decode"),
                fn_constructor_kwargs={
                    "model": self.model.name,
                    "dtype": stages.decode.dtype,
                    "device": stages.decode.device,
                    "latent_channels": self.geometry.latent_channels,
                    "vae_scale_factor": self.geometry.vae_scale_factor,
                },
                **_map_kwargs(stages.decode),
            )
            .map_batches(
                encode_images,
                fn_kwargs={"image_format": self.config.output.image_format, "quality": self.config.output.image_quality},
                batch_size=stages.write.batch_size,
                batch_format="numpy",
                num_cpus=stages.write.num_cpus,  # PNG encoding: CPU work kept off the GPU actors
            )
        )
        sink = ImageSink(self.output.uri, run_id, self.constants(), self.config.output.rows_per_shard, self.config.output.row_group_size)
        dataset.write_datasink(sink)
        results = getattr(sink, "results", [])
        elapsed = time.perf_counter() - start
        busy: Counter = Counter()
        for result in results:
            busy.update(result["busy_s"])
            self.report.images_generated += result["rows"]
            self.report.images_with_truncated_caption += result["truncated"]
            self.report.images_failed += result["failed"]
        self.report.stage_seconds["generate"] = elapsed
        self.report.stage_busy_seconds = {k: round(v, 3) for k, v in busy.items()}
        self.report.images_per_second = self.report.images_generated / elapsed if elapsed > 0 else 0.0

    def settings(self) -> dict[str, Any]:
        """What determines the images of this output (recorded, and guarded on re-runs)."""
        generation = self.config.generation
        is_hub = self.model.name != str(self.model.local_dir)
        return {
            "model": self.model.name if is_hub else "local checkpoint",
            "revision": self.model.revision,
            "checkpoint": checkpoint_identity(self.model),
            "scheduler": scheduler_name(self.model),
            "seed": generation.seed,
            "images_per_prompt": generation.images_per_prompt,
            "num_inference_steps": generation.num_inference_steps,
            "guidance_scale": generation.guidance_scale,
            "negative_prompt": generation.negative_prompt,
            "default_size": [generation.height, generation.width],
            "max_sequence_length": self.config.model.max_sequence_length,
            "clean_caption": self.config.model.clean_caption,
            "text_encoder_dtype": self.config.stages.encode.dtype,
            "denoise_dtype": self.config.stages.denoise.dtype,
            "decode_dtype": self.config.stages.decode.dtype,
            "image_format": self.config.output.image_format,
            "image_quality": self.config.output.image_quality,
        }

    def finish(self) -> dict[str, Any]:
        self.report.wall_seconds = round(time.time() - self.started, 3)
        self.report.stage_seconds = {k: round(v, 3) for k, v in self.report.stage_seconds.items()}
        report = self.report.to_dict()
        self.output.write_json("run_report.json", report)
        self.output.write_json("run_config.json", json.loads(config_json(self.config)))
        return report


def _stage_class(name: str):
    if name == "encode":
        from .stages.encode import TextEncoder

        return TextEncoder
    if name == "denoise":
        from .stages.denoise import Denoiser

        return Denoiser
    from .stages.decode import Decoder

    return Decoder


def run_generate(config: RunConfig, prompts: str, output: str, encode_only: bool = False) -> dict[str, Any]:
    """The whole pipeline (or only the embedding store with ``encode_only``); returns the run report."""
    run = Run(config, prompts, output)
    init_ray(config)
    configure_data_context(config)
    run.clean()
    run.encode()
    if not encode_only:
        rows = run.plan()
        run.generate(rows)
        run.output.write_card(run.settings(), {"images_total": run.report.images_planned, "prompts": run.report.prompts})
    report = run.finish()
    log(f"done: {report['images_generated']} images generated, {report['images_skipped']} skipped, "
        f"{report['embeddings_encoded']} captions encoded, {report['embeddings_reused']} reused, "
        f"{report['images_per_second']:.2f} images/s -> {run.output.uri}")
    return report
