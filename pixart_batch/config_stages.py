"""The ``stages:`` section of the run configuration: one frozen dataclass per model stage.

Every stage has the fields of :class:`StageConfig` (its resources and its model's dtype); a stage whose
field means something else restates it (:func:`~pixart_batch.config_fields.restate`): the dtype of
the T5 is an embedding setting, the DiT's and the VAE's an image setting, the CLIP's a checkpoint one,
and ``--batch-size`` sets the DiT's and the VAE's batch size. Imported by :mod:`pixart_batch.config`,
which re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config_fields import Role, above, at_least, restate, setting
from .errors import ConfigError
from .measured import DTYPE_BYTES

DTYPES = tuple(DTYPE_BYTES)
IMAGE, OPERATIONAL = Role.IMAGE, Role.OPERATIONAL


@dataclass(frozen=True)
class StageConfig:
    """Resources of one Ray stage. Every number is per actor (or per task for CPU stages)."""

    batch_size: int = setting(
        8, role=OPERATIONAL, range=at_least(1), help="Rows per batch handed to the stage."
    )
    # batch_size is operational: images do not depend on batch size (tested)
    num_gpus: float = setting(
        0.0,
        role=OPERATIONAL,
        range=at_least(0.0),
        help="GPUs per actor; fractional values let DiT and VAE actors share a card.",
    )
    num_cpus: float = setting(
        0.5,
        role=OPERATIONAL,
        range=at_least(0.0),
        help="""CPUs per actor/task. Fractional on small machines so actors do not starve the read/write
        tasks.""",
    )
    concurrency: int | list[int] = setting(
        1,
        role=OPERATIONAL,
        range=at_least(1),
        help="Actor pool size: a fixed size, or ``[min, max]`` for an autoscaling pool.",
    )
    dtype: str = setting(
        "float32",
        role=OPERATIONAL,
        help="""Weights dtype of this stage's model (``float32``, ``float16``, ``bfloat16``); unused without
        one.""",
    )

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        sizes = self.pool_size()  # each size >= 1: checked with the other ranges (config_fields)
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

    dtype: str = restate(StageConfig, "dtype", role=Role.EMBEDDING)
    quantization: str = setting(
        "none",
        role=Role.EMBEDDING,
        help="""T5 weights: ``none`` (in ``dtype``), ``int8`` (torchao weight-only int8; CPU and GPU),
        ``bnb-int8`` / ``bnb-nf4`` (bitsandbytes, CUDA only). Part of the embedding store's key.""",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"quantization: must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}"
            )


@dataclass(frozen=True)
class DecodeStageConfig(StageConfig):
    """The VAE actors."""

    batch_size: int = restate(StageConfig, "batch_size", flag="batch_size")
    dtype: str = restate(StageConfig, "dtype", role=IMAGE)
    vae_tiling: bool = setting(
        False,
        role=IMAGE,
        help="""Decode large images in overlapping tiles (diffusers' ``enable_tiling``): bounded memory at
        any size, pixels differ slightly from an untiled decode (recorded in the settings).""",
    )
    vae_slicing: bool = setting(
        False,
        role=OPERATIONAL,  # one image at a time: the same pixels
        help="Decode a batch one image at a time (``enable_slicing``): less peak memory, same pixels.",
    )
    colocate: bool = setting(
        False,
        role=OPERATIONAL,  # where the VAE runs, not what it computes
        help="""Run the VAE inside the DiT actors (one actor per GPU holding both models, the VAE of one
        batch overlapping the DiT of the next) instead of in a pool of its own. The GPU recipes use it:
        whole-GPU actors cannot be mis-packed the way 0.6 + 0.4 fractions can. ``num_gpus`` and
        ``concurrency`` of this stage must then be left at 0 / 1: the DiT actors' resources are used.""",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.colocate and (self.num_gpus > 0 or self.pool_size() != (1, 1)):
            raise ConfigError(
                "stages.decode.colocate: the VAE runs inside the DiT actors and uses their resources; "
                "set stages.decode.num_gpus to 0 and remove stages.decode.concurrency "
                "(size stages.denoise instead)"
            )


@dataclass(frozen=True)
class ScoreStageConfig(StageConfig):
    """Quality scores (off by default): CLIP image–text similarity of each decoded image against its
    caption (``clip_score`` = 100 × cosine), and an optional linear aesthetic head (``aesthetic_score``).

    The score stage changes no image; what determines the scores is recorded as ``settings()["score"]``
    (the scoring model's identity), as the checkpoint's files are: its fields are checkpoint settings."""

    dtype: str = restate(StageConfig, "dtype", role=Role.CHECKPOINT)
    enabled: bool = setting(
        False, role=Role.CHECKPOINT, help="Add ``clip_score`` (and ``aesthetic_score``) to every row."
    )
    model: str = setting(
        "openai/clip-vit-large-patch14",
        role=Role.CHECKPOINT,
        help="""A ``transformers`` CLIPModel: hub id, local directory (safetensors only) or ``tiny``
        (random, built locally).""",
    )
    revision: str | None = setting(None, role=Role.CHECKPOINT, help="Hub revision of the CLIP model.")
    aesthetic_head: str | None = setting(
        None,
        role=Role.CHECKPOINT,
        help="""A safetensors file: ``weight`` [1, D] (and optionally ``bias`` [1]) over the CLIP image
        embedding.""",
    )


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

    batch_size: int = restate(StageConfig, "batch_size", flag="batch_size")
    dtype: str = restate(StageConfig, "dtype", role=IMAGE)
    compile: bool = setting(
        False,
        role=OPERATIONAL,  # exact mode: the same images within the parity tolerance (tested)
        help="""``torch.compile`` the transformer (exact mode: the same images within the parity
        tolerance). Every call of one bucket then has the same shapes (text padded to
        ``max_sequence_length``, the batch padded to ``batch_size`` with copies), so each bucket compiles
        once; the compiled code is cached under the project cache (``TORCHINDUCTOR_CACHE_DIR``) and
        survives actor restarts.""",
    )
    step_cache: str = setting(
        "none",
        role=IMAGE,  # fast mode: approximates steps
        help="""Fast mode (changes images): diffusers' step caching of the DiT — ``none`` (exact),
        ``first-block`` (First-Block Cache; its skip decision is taken per batch, so an image depends on
        its batch partners), ``pab`` (Pyramid Attention Broadcast) or ``taylorseer`` (TaylorSeer).""",
    )
    step_cache_threshold: float = setting(
        0.05,
        role=IMAGE,  # recorded only where its mode uses it (RunSpec.resolved)
        range=above(0.0),
        help="""``first-block`` only: relative change of the first block's residual below which the other
        blocks are skipped (diffusers' default 0.05; higher = faster, further from exact).""",
    )
    step_cache_interval: int = setting(
        2,
        role=IMAGE,  # recorded only where its mode uses it (RunSpec.resolved)
        range=at_least(1),
        help="""``pab``: attention is recomputed every this many steps (spatial and cross attention, within
        timesteps 100..800); ``taylorseer``: a full step every this many steps after 3 warm-up steps.""",
    )
    fp8: bool = setting(
        False,
        role=IMAGE,
        help="""Fast mode (changes images): torchao float8 dynamic-activation + weight quantization of the
        transformer's linear layers; CUDA compute capability >= 8.9 (Ada, Hopper) only.""",
    )

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


def stage(cls: type = StageConfig, *, help: str, **defaults: Any) -> Any:
    """A stage of :class:`StagesConfig`: its class, what it is (the reference's text) and its defaults."""
    return field(default_factory=lambda: cls(**defaults), metadata={"help": " ".join(help.split())})


@dataclass(frozen=True)
class StagesConfig:
    """Resources, batch sizes and dtypes of each stage (``stages.*``: that field of every stage)."""

    clean: StageConfig = stage(
        batch_size=256, num_cpus=0.25, help="CPU tasks: caption cleaning (ftfy + bs4); dtype unused."
    )
    encode: EncodeStageConfig = stage(EncodeStageConfig, batch_size=32, help="T5 actors.")
    denoise: DenoiseStageConfig = stage(
        DenoiseStageConfig,
        batch_size=8,
        help="DiT actors; a batch is split by aspect bucket before it reaches the pipeline.",
    )
    decode: DecodeStageConfig = stage(
        DecodeStageConfig,
        batch_size=8,
        help="VAE actors: latents to pixels, resized back to the requested size.",
    )
    write: StageConfig = stage(
        batch_size=64,
        num_cpus=0.25,
        help="CPU tasks: image encoding (PNG/JPEG/WebP) and sha256; dtype unused.",
    )
    score: ScoreStageConfig = stage(
        ScoreStageConfig,
        batch_size=32,
        help="""CLIP actors (``enabled`` false: no stage): after decoding, on the pixels that are
        stored.""",
    )
