"""Typed run configuration: one frozen dataclass per component, loaded from YAML.

Unknown keys are rejected with their dotted name (a typo must never silently become
a default), a key given twice with its line, a number outside its range (:mod:`.config_ranges`)
with its dotted name and the range. CLI flags override fields after loading (:func:`with_overrides`).
The resolved config is written next to the outputs (``OUTPUT/run_config.json``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from .config_ranges import check_ranges
from .errors import ConfigError
from .executors.registry import AUTO
from .executors.registry import EXECUTORS as EXECUTOR_CLASSES
from .measured import DTYPE_BYTES, gpu_kinds
from .output.formats import DEFAULT_FORMAT, FORMATS
from .parsing import DuplicateKeyError, load_yaml

DTYPES = tuple(DTYPE_BYTES)
IMAGE_FORMATS = ("png", "jpeg", "webp")
OUTPUT_FORMATS = FORMATS.keys()
"""``output.format``: the registered output formats, a live view of
:data:`pixart_batch.output.formats.FORMATS` (so a format added by ``register_format`` is accepted)."""
TINY_MODEL = "tiny"


@dataclass(frozen=True)
class ModelConfig:
    path: str = TINY_MODEL
    """Hub id (``PixArt-alpha/PixArt-XL-2-1024-MS``), a local checkpoint directory, or ``tiny``
    (a random tiny checkpoint built locally and cached on first use)."""
    tiny_seed: int = 0
    """Seed of the tiny checkpoint when ``path`` is ``tiny``."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for a hub id; part of the embedding-store key."""
    components_from: str | None = None
    """A checkpoint (hub id or directory) supplying the components ``path`` lacks — text encoder,
    tokenizer, VAE — for checkpoints published as a transformer and scheduler only (PixArt-DMD,
    some PixArt-Σ releases), as their model cards load them."""
    max_sequence_length: int | None = None
    """T5 token limit; None = the model family's (120 for PixArt-α, 300 for Σ). Longer captions are
    truncated and flagged."""
    clean_caption: bool = True
    """Clean captions with diffusers' PixArt cleaning (needs ftfy and beautifulsoup4)."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("model.path: must not be empty")


@dataclass(frozen=True)
class GenerationConfig:
    seed: int = 0
    """Run seed; each image's seed derives from (seed, prompt id, image index) only."""
    images_per_prompt: int = 1
    num_inference_steps: int = 20
    guidance_scale: float = 4.5
    """Classifier-free guidance; <= 1 turns CFG off (as in diffusers)."""
    negative_prompt: str = ""
    """Negative prompt for prompts that bring none (PixArt's convention is the empty string)."""
    width: int | None = None
    """Default width for prompts that request no size; None with height None = the model's native square."""
    height: int | None = None
    scheduler: str = "checkpoint"
    """``checkpoint`` (the scheduler the checkpoint ships: DPM-Solver++ for PixArt-α/Σ, LCM for
    PixArt-LCM) or one of ``dpm-solver++``, ``sa-solver``, ``euler``, ``euler-ancestral``, ``ddim``,
    ``ddpm``, ``lcm`` (built with ``from_config`` on the checkpoint's scheduler config)."""
    timesteps: list[int] | None = None
    """Explicit timesteps instead of the scheduler's spacing (PixArt-DMD: ``[400]``); their count
    must equal ``num_inference_steps``."""

    def __post_init__(self) -> None:
        from .families import CHECKPOINT_SCHEDULER, SCHEDULERS

        if self.scheduler != CHECKPOINT_SCHEDULER and self.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"generation.scheduler: must be {CHECKPOINT_SCHEDULER} or one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"
            )
        if self.timesteps is not None:
            steps = self.timesteps
            if (
                not steps
                or any(not 0 <= t < 1000 for t in steps)
                or any(a <= b for a, b in itertools.pairwise(steps))
            ):
                raise ConfigError(
                    f"generation.timesteps: must be a non-empty, strictly decreasing list in [0, 1000), got {steps}"
                )
            if len(steps) != self.num_inference_steps:
                raise ConfigError(
                    f"generation.timesteps: {len(steps)} timesteps but num_inference_steps is "
                    f"{self.num_inference_steps}; make them agree"
                )
        if (self.width is None) != (self.height is None):
            raise ConfigError("generation.width/height: give both or neither")


@dataclass(frozen=True)
class StageConfig:
    """Resources of one Ray stage. Every number is per actor (or per task for CPU stages)."""

    batch_size: int = 8
    """Rows per batch handed to the stage."""
    num_gpus: float = 0.0
    """GPUs per actor; fractional values let DiT and VAE actors share a card."""
    num_cpus: float = 0.5
    """CPUs per actor/task. Fractional on small machines so actors do not starve the read/write tasks."""
    concurrency: int | list[int] = 1
    """Actor pool size: a fixed size, or ``[min, max]`` for an autoscaling pool."""
    dtype: str = "float32"
    """Weights dtype of this stage's model (``float32``, ``float16``, ``bfloat16``)."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        sizes = self.pool_size()  # each size >= 1: checked with the other ranges (config_ranges)
        if sizes[0] > sizes[1]:
            raise ConfigError(
                f"concurrency: must be a size >= 1 or [min, max] with 1 <= min <= max, got {self.concurrency}"
            )

    def pool_size(self) -> tuple[int, int]:
        """``(min, max)`` actor pool size."""
        if isinstance(self.concurrency, int):
            return self.concurrency, self.concurrency
        if len(self.concurrency) != 2:
            raise ConfigError(f"concurrency: expected [min, max], got {self.concurrency}")
        return int(self.concurrency[0]), int(self.concurrency[1])

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus > 0 else "cpu"


QUANTIZATIONS = ("none", "int8", "bnb-int8", "bnb-nf4")


@dataclass(frozen=True)
class EncodeStageConfig(StageConfig):
    """The T5 actors."""

    quantization: str = "none"
    """T5 weights: ``none`` (in ``dtype``), ``int8`` (torchao weight-only int8; CPU and GPU),
    ``bnb-int8`` / ``bnb-nf4`` (bitsandbytes, CUDA only). Part of the embedding store's key."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"quantization: must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}"
            )


@dataclass(frozen=True)
class DecodeStageConfig(StageConfig):
    """The VAE actors."""

    vae_tiling: bool = False
    """Decode large images in overlapping tiles (diffusers' ``enable_tiling``): bounded memory at any
    size, pixels differ slightly from an untiled decode (recorded in the settings)."""
    vae_slicing: bool = False
    """Decode a batch one image at a time (``enable_slicing``): less peak memory, same pixels."""
    colocate: bool = False
    """Run the VAE inside the DiT actors (one actor per GPU holding both models, the VAE of one
    batch overlapping the DiT of the next) instead of in a pool of its own. The GPU recipes use it:
    whole-GPU actors cannot be mis-packed the way 0.6 + 0.4 fractions can. ``num_gpus`` and
    ``concurrency`` of this stage must then be left at 0 / 1: the DiT actors' resources are used."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.colocate and (self.num_gpus > 0 or self.pool_size() != (1, 1)):
            raise ConfigError(
                "stages.decode.colocate: the VAE runs inside the DiT actors and uses their resources; "
                "set stages.decode.num_gpus to 0 and remove stages.decode.concurrency (size stages.denoise instead)"
            )


@dataclass(frozen=True)
class ScoreStageConfig(StageConfig):
    """Quality scores (off by default): CLIP image–text similarity of each decoded image against its
    caption (``clip_score`` = 100 × cosine), and an optional linear aesthetic head (``aesthetic_score``)."""

    enabled: bool = False
    model: str = "openai/clip-vit-large-patch14"
    """A ``transformers`` CLIPModel: hub id, local directory (safetensors only) or ``tiny`` (random, built locally)."""
    revision: str | None = None
    aesthetic_head: str | None = None
    """A safetensors file: ``weight`` [1, D] (and optionally ``bias`` [1]) over the CLIP image embedding."""


STEP_CACHE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "none": (),
    "first-block": ("step_cache_threshold",),
    "pab": ("step_cache_interval",),
    "taylorseer": ("step_cache_interval",),
}
"""``stages.denoise.step_cache`` options → the ``stages.denoise`` fields each one uses (the others
change no image: :attr:`DenoiseStageConfig.fast_mode` and ``RunSpec.resolved`` read this table)."""
STEP_CACHES = tuple(STEP_CACHE_PARAMETERS)


@dataclass(frozen=True)
class DenoiseStageConfig(StageConfig):
    """The DiT actors."""

    compile: bool = False
    """``torch.compile`` the transformer (exact mode: the same images within the parity tolerance).
    Every call of one bucket then has the same shapes (text padded to ``max_sequence_length``, the
    batch padded to ``batch_size`` with copies), so each bucket compiles once; the compiled code is
    cached under the project cache (``TORCHINDUCTOR_CACHE_DIR``) and survives actor restarts."""
    step_cache: str = "none"
    """Fast mode (changes images): diffusers' step caching of the DiT — ``none`` (exact),
    ``first-block`` (First-Block Cache; its skip decision is taken per batch, so an image depends on
    its batch partners), ``pab`` (Pyramid Attention Broadcast) or ``taylorseer`` (TaylorSeer)."""
    step_cache_threshold: float = 0.05
    """``first-block`` only: relative change of the first block's residual below which the other
    blocks are skipped (diffusers' default 0.05; higher = faster, further from exact)."""
    step_cache_interval: int = 2
    """``pab``: attention is recomputed every this many steps (spatial and cross attention, within
    timesteps 100..800); ``taylorseer``: a full step every this many steps after 3 warm-up steps."""
    fp8: bool = False
    """Fast mode (changes images): torchao float8 dynamic-activation + weight quantization of the
    transformer's linear layers; CUDA compute capability >= 8.9 (Ada, Hopper) only."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step_cache not in STEP_CACHES:
            raise ConfigError(f"step_cache: must be one of {', '.join(STEP_CACHES)}, got {self.step_cache!r}")

    @property
    def fast_mode(self) -> str:
        """The approximations this stage runs, as recorded in every row: ``exact`` or e.g.
        ``first-block(threshold=0.05)+fp8``."""
        parts = []
        if self.step_cache != "none":
            arguments = ",".join(
                f"{name.removeprefix('step_cache_')}={_number(getattr(self, name))}"
                for name in STEP_CACHE_PARAMETERS[self.step_cache]
            )
            parts.append(f"{self.step_cache}({arguments})")
        if self.fp8:
            parts.append("fp8")
        return "+".join(parts) or "exact"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _stage(cls: type = StageConfig, **kwargs: Any) -> Any:
    return field(default_factory=lambda: cls(**kwargs))


@dataclass(frozen=True)
class StagesConfig:
    clean: StageConfig = _stage(batch_size=256, num_cpus=0.25)
    """CPU tasks: caption cleaning (ftfy + bs4); dtype unused."""
    encode: EncodeStageConfig = _stage(EncodeStageConfig, batch_size=32)
    """T5 actors."""
    denoise: DenoiseStageConfig = _stage(DenoiseStageConfig, batch_size=8)
    """DiT actors; a batch is split by aspect bucket before it reaches the pipeline."""
    decode: DecodeStageConfig = _stage(DecodeStageConfig, batch_size=8)
    """VAE actors: latents to pixels, resized back to the requested size."""
    write: StageConfig = _stage(batch_size=64, num_cpus=0.25)
    """CPU tasks: image encoding (PNG/JPEG/WebP) and sha256; dtype unused."""
    score: ScoreStageConfig = _stage(ScoreStageConfig, batch_size=32)
    """CLIP actors (``enabled`` false: no stage): after decoding, on the pixels that are stored."""


@dataclass(frozen=True)
class OutputConfig:
    image_format: str = "png"
    """``png`` (lossless, default), ``jpeg`` or ``webp``."""
    image_quality: int = 95
    """JPEG/WebP quality (1-100); ignored for PNG."""
    rows_per_shard: int = 1000
    """Most image rows in one Parquet shard under ``OUTPUT/data/``."""
    row_group_size: int = 100
    """Rows per Parquet row group (the unit a reader fetches)."""
    store_rows_per_part: int = 1024
    """Captions per embedding-store part file (the unit committed at once while encoding)."""
    store: str | None = None
    """Embedding store root; default ``OUTPUT/embeddings``. Shared stores are safe: entries are keyed
    by everything that changes an embedding."""
    format: str = DEFAULT_FORMAT
    """Shard format under ``OUTPUT/data/``: ``parquet`` (default) or ``webdataset`` (tar shards;
    :mod:`pixart_batch.output.formats`). Fixed for an output: a run in another format is refused."""

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

    max_consecutive: int = 20
    """Stop after this many images in a row failed (each already retried alone)."""
    max_rate: float = 0.1
    """Stop when more than this fraction of the images so far failed ..."""
    rate_after: int = 50
    """... once at least this many images have finished (succeeded or failed)."""


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None
    """Ray address; None joins ``RAY_ADDRESS`` / a running local cluster or starts a local one."""
    num_cpus: int | None = None
    """Logical CPUs of a Ray instance started here (more than the cores is fine: stages use fractions)."""
    no_progress_timeout_s: float = 600.0
    """Fail (instead of hanging) when the pipeline makes no progress for this many seconds (> 0; there
    is no "off": set a large value for very slow first batches)."""
    executor: str = "auto"
    """``ray``: the Ray Data pipeline; ``local``: the same stages one after another in this process
    (no Ray: seconds instead of a minute of fixed cost, all cores for each model); ``auto``: local
    when no cluster is given (``ray.address`` / ``RAY_ADDRESS``) and the run plans at most
    ``local_max_images`` images, else ray."""
    local_max_images: int = 256
    """The largest run ``auto`` executes in-process (its plan is held in memory)."""
    task_num_cpus: float = 0.25
    """CPUs of one task of Ray Data's own operators: reading the staged prompts, the store and the key
    files, the repartitions, the de-duplication and the joins, the store and plan writes (image writes:
    ``stages.write.num_cpus``). Ray's default is a whole CPU, which actors holding fractions of a small
    cluster's CPUs can leave waiting forever; a fraction lets such a task run beside them."""

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"ray.executor: must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")


EXECUTORS = (AUTO, *EXECUTOR_CLASSES)
"""``ray.executor``: ``auto`` or a registered executor (:data:`pixart_batch.executors.EXECUTORS`)."""


@dataclass(frozen=True)
class ConsoleConfig:
    progress_interval_s: float = 30.0
    """When stderr is not a terminal (a log file, ``ray job logs``): print the progress line this often."""
    verbose: bool = False
    """Show Ray's own INFO lines, Ray Data's progress bars and worker output (``--verbose``)."""


@dataclass(frozen=True)
class EstimateConfig:
    """What ``pixart-batch plan`` prices a run with (nothing here changes a run)."""

    gpu: str = "h200"
    """GPU kind whose measured seconds per image the estimate uses (see ``pixart_batch.measured.MEASURED``)."""
    usd_per_gpu_hour: float | None = None
    """Price of one GPU-hour in US dollars; None: the estimate shows GPU-hours but no cost."""

    def __post_init__(self) -> None:
        if self.gpu not in gpu_kinds():
            raise ConfigError(
                f"estimate.gpu: unknown GPU kind {self.gpu!r} (known: {', '.join(gpu_kinds())})"
            )


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    failures: FailuresConfig = field(default_factory=FailuresConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)

    def __post_init__(self) -> None:
        check_ranges(self)  # every number of every section (pixart_batch.config_ranges.RANGES)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys by dotted name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{name}' (known: {', '.join(fields)})")
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, name)
        else:
            kwargs[key] = _check_type(value, hint, name)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        message = str(exc)
        if where and not message.startswith(where):
            message = f"{where}.{message}"
        raise ConfigError(message) from None


def _check_type(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    options = (
        typing.get_args(hint)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None))
        else (hint,)
    )
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is str and isinstance(value, str):
            return value
        if (
            typing.get_origin(option) is list
            and isinstance(value, list)
            and all(isinstance(v, int) for v in value)
        ):
            return list(value)
    raise ConfigError(f"config key '{name}': expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def load_config(path: str | os.PathLike | None) -> RunConfig:
    """Load a YAML recipe (None = all defaults)."""
    if path is None:
        return RunConfig()
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = load_yaml(handle)
    except DuplicateKeyError as exc:
        raise ConfigError(exc.describe(str(path))) from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return _build(RunConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``config`` with dotted-key overrides (``{"generation.seed": 3}``); None values are skipped."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is not None:
            set_dotted(data, dotted, value)
    return _build(RunConfig, data, "")


def get_dotted(node: Any, dotted: str) -> Any:
    """The value at a dotted key (``generation.seed``) of a config dataclass or of its dict form."""
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set a dotted key (``generation.seed``) in a config's dict form (nested mappings)."""
    parent, _, leaf = dotted.rpartition(".")
    node = get_dotted(data, parent) if parent else data
    node[leaf] = value


def config_json(config: RunConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
