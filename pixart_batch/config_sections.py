"""The sections of the run configuration other than ``stages:`` (:mod:`.config_stages`): one frozen
dataclass each, every leaf field a :func:`~pixart_batch.config_fields.setting` with its facts.
Imported by :mod:`pixart_batch.config`, which re-exports every name here."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .config_fields import SEED, Range, Role, above, at_least, setting
from .errors import ConfigError
from .executors.registry import AUTO
from .executors.registry import EXECUTORS as EXECUTOR_CLASSES
from .measured import gpu_kinds
from .output.formats import DEFAULT_FORMAT, FORMATS

IMAGE_FORMATS = ("png", "jpeg", "webp")
OUTPUT_FORMATS = FORMATS.keys()
"""``output.format``: the registered output formats, a live view of
:data:`pixart_batch.output.formats.FORMATS` (so a format added by ``register_format`` is accepted)."""
EXECUTORS = (AUTO, *EXECUTOR_CLASSES)
"""``ray.executor``: ``auto`` or a registered executor (:data:`pixart_batch.executors.EXECUTORS`)."""
TINY_MODEL = "tiny"
CHECKPOINT, EMBEDDING, IMAGE, OPERATIONAL = Role.CHECKPOINT, Role.EMBEDDING, Role.IMAGE, Role.OPERATIONAL


@dataclass(frozen=True)
class ModelConfig:
    """The checkpoint: its identity (a hash of its files, or hub id + revision) is what is recorded."""

    path: str = setting(
        TINY_MODEL,
        role=CHECKPOINT,
        flag="model",
        help="""Hub id (``PixArt-alpha/PixArt-XL-2-1024-MS``), a local checkpoint directory, or ``tiny``
        (a random tiny checkpoint built locally and cached on first use).""",
    )
    tiny_seed: int = setting(
        0, role=CHECKPOINT, range=SEED, help="Seed of the tiny checkpoint when ``path`` is ``tiny``."
    )
    revision: str | None = setting(
        None,
        role=CHECKPOINT,
        help="Hub revision (branch, tag or commit) for a hub id; part of the embedding-store key.",
    )
    components_from: str | None = setting(
        None,
        role=CHECKPOINT,
        help="""A checkpoint (hub id or directory) supplying the components ``path`` lacks — text
        encoder, tokenizer, VAE — for checkpoints published as a transformer and scheduler only
        (PixArt-DMD, some PixArt-Σ releases), as their model cards load them.""",
    )
    max_sequence_length: int | None = setting(
        None,
        role=EMBEDDING,
        range=at_least(1),
        flag="max_sequence_length",
        help="""T5 token limit; None = the model family's (120 for PixArt-α, 300 for Σ). Longer captions
        are truncated and flagged.""",
    )
    clean_caption: bool = setting(
        True,
        role=EMBEDDING,
        help="Clean captions with diffusers' PixArt cleaning (needs ftfy and beautifulsoup4).",
    )

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("model.path: must not be empty")


@dataclass(frozen=True)
class GenerationConfig:
    """What each image is: every field here changes pixels (the settings guard and the rows record it)."""

    seed: int = setting(
        0,
        role=IMAGE,
        range=SEED,
        flag="seed",
        help="Run seed; each image's seed derives from (seed, prompt id, image index) only.",
    )
    images_per_prompt: int = setting(
        1,
        role=IMAGE,
        range=Range(1, 99_999),  # image keys carry a 5-digit index
        flag="images_per_prompt",
        help="Images per prompt, each with its own seed (may grow between runs of one output).",
    )
    num_inference_steps: int = setting(
        20,
        role=IMAGE,
        range=at_least(1),  # at most the scheduler's training steps: checked with the checkpoint
        flag="steps",
        help="Denoising steps (at most the scheduler's training steps: checked with the checkpoint).",
    )
    guidance_scale: float = setting(
        4.5,
        role=IMAGE,
        range=at_least(0.0),
        flag="guidance_scale",
        help="Classifier-free guidance; <= 1 turns CFG off (as in diffusers).",
    )
    negative_prompt: str = setting(
        "",
        role=IMAGE,
        help="Negative prompt for prompts that bring none (PixArt's convention is the empty string).",
    )
    width: int | None = setting(
        None,
        role=IMAGE,
        range=at_least(8),  # at most the model's largest size: checked with the checkpoint
        help="""Default width for prompts that request no size; None with height None = the model's
        native square.""",
    )
    height: int | None = setting(
        None, role=IMAGE, range=at_least(8), help="Default height (with ``width``: both or neither)."
    )
    scheduler: str = setting(
        "checkpoint",
        role=IMAGE,
        flag="scheduler",
        help="""``checkpoint`` (the scheduler the checkpoint ships: DPM-Solver++ for PixArt-α/Σ, LCM for
        PixArt-LCM) or one of ``dpm-solver++``, ``sa-solver``, ``euler``, ``euler-ancestral``, ``ddim``,
        ``ddpm``, ``lcm`` (built with ``from_config`` on the checkpoint's scheduler config).""",
    )
    timesteps: list[int] | None = setting(
        None,
        role=IMAGE,
        range=Range(0, 1000, high_open=True),
        help="""Explicit timesteps instead of the scheduler's spacing (PixArt-DMD: ``[400]``); their
        count must equal ``num_inference_steps``.""",
    )

    def __post_init__(self) -> None:
        from .families import CHECKPOINT_SCHEDULER, SCHEDULERS

        if self.scheduler != CHECKPOINT_SCHEDULER and self.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"generation.scheduler: must be {CHECKPOINT_SCHEDULER} or one of {', '.join(SCHEDULERS)}, "
                f"got {self.scheduler!r}"
            )
        if self.timesteps is not None:
            steps = self.timesteps
            if (
                not steps
                or any(not 0 <= t < 1000 for t in steps)
                or any(a <= b for a, b in itertools.pairwise(steps))
            ):
                raise ConfigError(
                    "generation.timesteps: must be a non-empty, strictly decreasing list in [0, 1000), "
                    f"got {steps}"
                )
            if len(steps) != self.num_inference_steps:
                raise ConfigError(
                    f"generation.timesteps: {len(steps)} timesteps but num_inference_steps is "
                    f"{self.num_inference_steps}; make them agree"
                )
        if (self.width is None) != (self.height is None):
            raise ConfigError("generation.width/height: give both or neither")

    @property
    def cfg(self) -> bool:
        """Classifier-free guidance runs (negative prompts encoded and fed to the DiT) only when
        ``guidance_scale`` > 1, as in diffusers."""
        return self.guidance_scale > 1.0


@dataclass(frozen=True)
class OutputConfig:
    """The output folder's files: the image encoding and the shard format change them (settings guard)."""

    image_format: str = setting(
        "png",
        role=IMAGE,
        flag="image_format",
        choices=IMAGE_FORMATS,
        help="Image encoding: ``png`` (lossless, default), ``jpeg`` or ``webp``.",
    )
    image_quality: int = setting(
        95, role=IMAGE, range=Range(1, 100), help="JPEG/WebP quality (1-100); ignored for PNG."
    )
    rows_per_shard: int = setting(
        1000,
        role=OPERATIONAL,
        range=at_least(1),
        help="Most image rows in one Parquet shard under ``OUTPUT/data/``.",
    )
    row_group_size: int = setting(
        100,
        role=OPERATIONAL,
        range=at_least(1),
        help="Rows per Parquet row group (the unit a reader fetches).",
    )
    store_rows_per_part: int = setting(
        1024,
        role=OPERATIONAL,
        range=at_least(1),
        help="Captions per embedding-store part file (the unit committed at once while encoding).",
    )
    store: str | None = setting(
        None,
        role=OPERATIONAL,
        flag="store",
        help="""Embedding store root; default ``OUTPUT/embeddings``. Shared stores are safe: entries are
        keyed by everything that changes an embedding.""",
    )
    format: str = setting(
        DEFAULT_FORMAT,
        # Changes the files, not the pixels; IMAGE so that it is in settings() and so the settings guard
        # refuses a run in another format on an existing output (one output never mixes formats).
        role=IMAGE,
        flag="output_format",
        choices=OUTPUT_FORMATS,
        help="""Shard format under ``OUTPUT/data/``: ``parquet`` (default) or ``webdataset`` (tar shards).
        Fixed for an output: a run in another format is refused.""",
    )

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(
                f"output.image_format: must be one of {', '.join(IMAGE_FORMATS)}, got {self.image_format!r}"
            )
        if self.format not in OUTPUT_FORMATS:
            raise ConfigError(
                f"output.format: must be one of {', '.join(OUTPUT_FORMATS)}, got {self.format!r}"
            )


@dataclass(frozen=True)
class FailuresConfig:
    """When failing images mean the run itself is broken (a bad model, every batch out of memory)."""

    max_consecutive: int = setting(
        20,
        role=OPERATIONAL,
        range=at_least(1),
        help="Stop after this many images in a row failed (each already retried alone).",
    )
    max_rate: float = setting(
        0.1,
        role=OPERATIONAL,
        range=Range(0.0, 1.0, low_open=True),
        help="Stop when more than this fraction of the images so far failed ...",
    )
    rate_after: int = setting(
        50,
        role=OPERATIONAL,
        range=at_least(1),
        help="... once at least this many images have finished (succeeded or failed).",
    )


@dataclass(frozen=True)
class RayConfig:
    """Where and how the stages run (nothing here changes an image: the same stages and seeds either way)."""

    address: str | None = setting(
        None,
        role=OPERATIONAL,
        help="Ray address; None joins ``RAY_ADDRESS`` / a running local cluster or starts a local one.",
    )
    num_cpus: int | None = setting(
        None,
        role=OPERATIONAL,
        range=at_least(1),
        help="""Logical CPUs of a Ray instance started here (more than the cores is fine: stages use
        fractions).""",
    )
    no_progress_timeout_s: float = setting(
        600.0,
        role=OPERATIONAL,
        range=above(0.0),  # Ray Data refuses 0; there is no "off"
        help="""Fail (instead of hanging) when the pipeline makes no progress for this many seconds (> 0;
        there is no "off": set a large value for very slow first batches).""",
    )
    executor: str = setting(
        "auto",
        role=OPERATIONAL,  # the same stages and seeds either way (tested)
        flag="executor",
        choices=EXECUTORS,
        help="""``ray``: the Ray Data pipeline; ``local``: the same stages one after another in this
        process (no Ray: seconds instead of a minute of fixed cost, all cores for each model); ``auto``:
        local when no cluster is given (``ray.address`` / ``RAY_ADDRESS``) and the run plans at most
        ``local_max_images`` images, else ray.""",
    )
    local_max_images: int = setting(
        256,
        role=OPERATIONAL,
        range=at_least(0),  # 0: auto never runs in-process
        help="The largest run ``auto`` executes in-process (its plan is held in memory).",
    )
    task_num_cpus: float = setting(
        0.25,
        role=OPERATIONAL,
        range=above(0.0),  # a task asking no CPU is not bounded by the cluster's CPUs
        help="""CPUs of one task of Ray Data's own operators: reading the staged prompts, the store and
        the key files, the repartitions, the de-duplication and the joins, the store and plan writes
        (image writes: ``stages.write.num_cpus``). Ray's default is a whole CPU, which actors holding
        fractions of a small cluster's CPUs can leave waiting forever; a fraction lets such a task run
        beside them.""",
    )

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"ray.executor: must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")


@dataclass(frozen=True)
class ConsoleConfig:
    """What the run prints on stderr."""

    progress_interval_s: float = setting(
        30.0,
        role=OPERATIONAL,
        range=above(0.0),
        flag="progress_interval",
        help="""When stderr is not a terminal (a log file, ``ray job logs``): print the progress line
        this often, in seconds.""",
    )
    verbose: bool = setting(
        False,
        role=OPERATIONAL,
        flag="verbose",
        help="Show Ray's own INFO lines, Ray Data's progress bars and worker output.",
    )


@dataclass(frozen=True)
class EstimateConfig:
    """What ``pixart-batch plan`` prices a run with (nothing here changes a run)."""

    gpu: str = setting(
        "h200",
        role=OPERATIONAL,  # read by `pixart-batch plan` only
        flag="gpu",
        help="""GPU kind whose measured seconds per image the estimate uses (see
        ``pixart_batch.measured.MEASURED``).""",
    )
    usd_per_gpu_hour: float | None = setting(
        None,
        role=OPERATIONAL,
        range=above(0.0),
        flag="usd_per_gpu_hour",
        help="Price of one GPU-hour in US dollars; None: the estimate shows GPU-hours but no cost.",
    )

    def __post_init__(self) -> None:
        if self.gpu not in gpu_kinds():
            raise ConfigError(
                f"estimate.gpu: unknown GPU kind {self.gpu!r} (known: {', '.join(gpu_kinds())})"
            )
