"""The run specification: the config resolved against the checkpoint, Ray-free.

Every config field has one **role**, declared on the field itself (``setting(role=...)`` in
:mod:`pixart_batch.config`; :data:`ROLES` is derived from the fields by :mod:`.config_tables`), and
everything downstream is derived from the roles instead of kept by hand:

- ``embedding``: changes the T5 outputs → part of the embedding store's key
  (:meth:`RunSpec.store_identity`) and of the settings guard;
- ``image``: changes the pixels → the settings guard (``OUTPUT/settings.json``, also written
  into every shard's metadata) and the row metadata;
- ``checkpoint``: picks the checkpoint → recorded as the checkpoint's identity (a hash of its
  files, or hub id + revision), not as the value given;
- ``operational``: resources, batch sizes, paths → recorded in ``run_config.json`` only.

:func:`check_classified` refuses a config class with a field that has no role, and a test
calls it: a new option cannot silently escape the store key or the guard.

The stages receive their own typed specs (:class:`EncodeSpec`, :class:`DenoiseSpec`,
:class:`DecodeSpec`, :class:`CleanSpec`), never loose scalars from several config sections; the
executors receive :meth:`RunSpec.execution` (:mod:`pixart_batch.execution`), never the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import schema as S
from .buckets import ModelGeometry, aspect_ratio_table, read_model_geometry
from .config import STEP_CACHE_PARAMETERS, DenoiseStageConfig, RunConfig, get_dotted
from .config_fields import Role
from .config_tables import ROLES as ROLES  # re-exported: derived from the fields
from .config_tables import check_classified as check_classified
from .config_tables import default_of, leaf_fields, role_of
from .execution import ExecutionSpec
from .families import FAMILIES, ModelFamily, scheduler_class_for
from .models import ModelSource, ResolvedModel, checkpoint_identity, encoder_identity, resolve_model
from .score_model import SCORE_SETTING, ScoreModel, resolve_score_model

if TYPE_CHECKING:
    from .store import StoreIdentity


GROWABLE_SETTINGS = {"generation.images_per_prompt", "output.label_names"}
"""Settings that may grow between runs without changing existing images (more images per prompt; class
names appended to a labelled output's, the earlier ones keeping their ids)."""


def config_value(config: RunConfig, name: str) -> Any:
    return get_dotted(config, name)


ROW_FIELDS: dict[str, str] = {
    S.STEPS: "generation.num_inference_steps",
    S.GUIDANCE: "generation.guidance_scale",
    S.TIMESTEPS: "generation.timesteps",
    S.DTYPE: "stages.denoise.dtype",
    S.MAX_SEQ_LEN: "model.max_sequence_length",
    S.IMAGE_FORMAT: "output.image_format",
}
"""Row columns that record a config field as it takes effect (:meth:`RunSpec.resolved`)."""


# --------------------------------------------------------------------------- per-stage specs


@dataclass(frozen=True)
class CleanSpec:
    clean_caption: bool
    pipeline_class: str
    """Whose ``_text_preprocessing`` cleans captions (the family's pipeline class)."""


@dataclass(frozen=True)
class EncodeSpec:
    model: ModelSource
    dtype: str
    device: str
    max_sequence_length: int
    quantization: str


@dataclass(frozen=True)
class DenoiseSpec:
    model: ModelSource
    pipeline_class: str
    dtype: str
    device: str
    scheduler: str
    """``generation.scheduler``: ``checkpoint`` or an option built ``from_config``."""
    num_inference_steps: int
    guidance_scale: float
    timesteps: tuple[int, ...] | None
    embedding_dtype: str
    text_dim: int
    vae_scale_factor: int
    max_sequence_length: int = FAMILIES["PixArtAlphaPipeline"].max_sequence_length
    """The text length every call is padded to when ``compile`` is on (fixed shapes)."""
    batch_size: int = default_of("stages.denoise.batch_size")
    """The batch every call is padded to when ``compile`` is on (fixed shapes)."""
    compile: bool = DenoiseStageConfig.compile
    step_cache: str = DenoiseStageConfig.step_cache
    step_cache_threshold: float = DenoiseStageConfig.step_cache_threshold
    step_cache_interval: int = DenoiseStageConfig.step_cache_interval
    fp8: bool = DenoiseStageConfig.fp8

    @property
    def cfg(self) -> bool:
        """Classifier-free guidance runs (both branches) only when guidance > 1, as in diffusers."""
        return self.guidance_scale > 1.0


@dataclass(frozen=True)
class DecodeSpec:
    model: ModelSource
    dtype: str
    device: str
    latent_channels: int
    vae_scale_factor: int
    vae_tiling: bool
    vae_slicing: bool


@dataclass(frozen=True)
class ScoreSpec:
    model_dir: str
    """The CLIP model: its hub id or local directory (loaded with ``CLIPModel`` /
    ``CLIPProcessor.from_pretrained``)."""
    head: str | None
    dtype: str
    device: str
    batch_size: int
    image_format: str = "png"
    """The stored format: a lossy one is encoded and decoded before scoring, so scores match the stored
    image."""
    image_quality: int = 95
    revision: str | None = None


# --------------------------------------------------------------------------- the run spec


@dataclass(frozen=True)
class RunSpec:
    config: RunConfig
    model: ResolvedModel
    geometry: ModelGeometry
    max_sequence_length: int
    """``model.max_sequence_length``, or the family's token limit when not set."""
    scheduler_class: str
    """The scheduler class that runs (the checkpoint's, or the ``generation.scheduler`` option's)."""
    score: ScoreModel | None = None
    """The quality-score model when ``stages.score.enabled`` (resolved and checked when the spec is built)."""

    @classmethod
    def build(cls, config: RunConfig, weights: bool = True, light: bool = False) -> RunSpec:
        """Resolve the checkpoint (one-line errors for a missing or unsafe one) and derive the spec.
        ``weights`` False: from the checkpoint's configs only (``pixart-batch plan``; nothing loads).

        ``light``: the checkpoint's configs and file digests only, for the settings a run would record
        (:meth:`settings`, :meth:`store_identity`) without importing torch or diffusers: no weights checked,
        no aspect-ratio table looked up, no score model (refused: its identity needs torch). Only for
        comparing against what an output recorded; never for a run that makes anything."""
        if light and config.stages.score.enabled:
            raise ValueError("a light RunSpec has no score model; build the full spec for stages.score")
        model = resolve_model(config.model, weights and not light)
        geometry = read_model_geometry(
            model.local_dir,
            {
                name: model.checkpoint_of(name).local_dir / name
                for name in ("transformer", "vae", "text_encoder")
            },
        )
        if not light:  # a sample size without bins is refused here, before anything is written
            aspect_ratio_table(geometry.sample_size)
        if weights and not light:
            from .weights import check_weights

            check_weights(model)  # weights that would fail to load in an actor, minutes later
        return cls(
            config=config,
            model=model,
            geometry=geometry,
            max_sequence_length=config.model.max_sequence_length or model.family.max_sequence_length,
            scheduler_class=scheduler_class_for(config.generation.scheduler, model.shipped_scheduler),
            score=None if light else score_model_of(config),
        )

    @property
    def max_steps(self) -> int:
        """The most inference steps the scheduler that runs accepts (its training timesteps; LCM: its
        ``original_inference_steps``)."""
        from .errors import CheckpointError
        from .parsing import DuplicateKeyError, loads_json

        checkpoint = self.model.checkpoint_of("scheduler")
        path = checkpoint.local_dir / "scheduler" / "scheduler_config.json"
        try:
            config = loads_json(path.read_text())
        except DuplicateKeyError as exc:
            raise CheckpointError(exc.describe(str(path))) from None
        except (OSError, ValueError):
            config = {}
        if self.scheduler_class == "LCMScheduler":
            return int(config.get("original_inference_steps", 50))
        return int(config.get("num_train_timesteps", 1000))

    @property
    def family(self) -> ModelFamily:
        return self.model.family

    @property
    def table(self) -> dict[str, list[float]]:
        return aspect_ratio_table(self.geometry.sample_size)

    @property
    def uses_negative(self) -> bool:
        """Whether negative prompts are encoded and fed to the DiT (CFG on)."""
        return self.config.generation.cfg

    def resolved(self, name: str) -> Any:
        """A field's value as it takes effect (defaults resolved against the checkpoint)."""
        if name == "model.max_sequence_length":
            return self.max_sequence_length
        prefix = "stages.denoise.step_cache_"
        if name.startswith(prefix):
            used = STEP_CACHE_PARAMETERS[self.config.stages.denoise.step_cache]
            if name.removeprefix("stages.denoise.") not in used:
                return None  # unused: changing it changes no image, so it must not trip the settings guard
        value = config_value(self.config, name)
        return list(value) if isinstance(value, tuple) else value

    def _values(self, *roles: Role) -> dict[str, Any]:
        return {name: self.resolved(name) for name in leaf_fields() if role_of(name) in roles}

    def store_identity(self) -> StoreIdentity:
        """What determines the embeddings: the encoder's files, its width and every ``embedding`` field."""
        from .store import StoreIdentity

        return StoreIdentity(
            encoder=encoder_identity(self.model),
            d_model=self.geometry.text_dim,
            settings=self._values(Role.EMBEDDING),
        )

    def settings(self) -> dict[str, Any]:
        """What determines the images (the settings guard; also written into every shard)."""
        return {
            "checkpoint": checkpoint_identity(self.model),
            "model": self.model.name if self.model.is_hub else "local checkpoint",
            "revision": self.model.revision,
            "components_from": None
            if self.model.base is None
            else (self.model.base.name if self.model.base.is_hub else "local checkpoint"),
            "family": self.family.name,
            "scheduler_class": self.scheduler_class,
            **self._values(Role.EMBEDDING, Role.IMAGE),
            **({SCORE_SETTING: self.score.identity()} if self.score is not None else {}),
        }

    def row_constants(self) -> dict[str, Any]:
        """Row columns that are the same for every image of the run (the ``scheduler`` column comes
        from the DiT actor that ran it)."""
        row = {column: self.resolved(name) for column, name in ROW_FIELDS.items()}
        row[S.TIMESTEPS] = list(row[S.TIMESTEPS] or [])
        row.update({S.MODEL: self.model.name, S.FAST_MODE: self.config.stages.denoise.fast_mode})
        return {column: row[column] for column in S.OUTPUT_COLUMNS if column in row}

    def execution(self) -> ExecutionSpec:
        """What an executor is given: each stage's execution spec (resources, batch size, its registry name
        and constructor arguments, built from the stage specs below) and the run's execution settings."""
        return ExecutionSpec.build(self.config, self)

    # -- stage specs
    def clean_spec(self) -> CleanSpec:
        return CleanSpec(self.config.model.clean_caption, self.family.pipeline_class)

    def encode_spec(self) -> EncodeSpec:
        stage = self.config.stages.encode
        return EncodeSpec(
            self.model.source, stage.dtype, stage.device, self.max_sequence_length, stage.quantization
        )

    def denoise_spec(self) -> DenoiseSpec:
        stage, generation = self.config.stages.denoise, self.config.generation
        return DenoiseSpec(
            model=self.model.source,
            pipeline_class=self.family.pipeline_class,
            dtype=stage.dtype,
            device=stage.device,
            scheduler=generation.scheduler,
            num_inference_steps=generation.num_inference_steps,
            guidance_scale=generation.guidance_scale,
            timesteps=tuple(generation.timesteps) if generation.timesteps else None,
            embedding_dtype=self.config.stages.encode.dtype,
            text_dim=self.geometry.text_dim,
            vae_scale_factor=self.geometry.vae_scale_factor,
            max_sequence_length=self.max_sequence_length,
            batch_size=stage.batch_size,
            compile=stage.compile,
            step_cache=stage.step_cache,
            step_cache_threshold=stage.step_cache_threshold,
            step_cache_interval=stage.step_cache_interval,
            fp8=stage.fp8,
        )

    def score_spec(self) -> ScoreSpec:
        assert self.score is not None, "stages.score is not enabled"
        stage, output = self.config.stages.score, self.config.output
        head = str(self.score.head) if self.score.head is not None else None
        return ScoreSpec(
            str(self.score.local_dir),
            head,
            stage.dtype,
            stage.device,
            stage.batch_size,
            output.image_format,
            output.image_quality,
        )

    def decode_spec(self) -> DecodeSpec:
        stage = self.config.stages.decode
        return DecodeSpec(
            model=self.model.source,
            dtype=stage.dtype,
            device=stage.device,
            latent_channels=self.geometry.latent_channels,
            vae_scale_factor=self.geometry.vae_scale_factor,
            vae_tiling=stage.vae_tiling,
            vae_slicing=stage.vae_slicing,
        )


def score_model_of(config: RunConfig) -> ScoreModel | None:
    """The checked score model of ``stages.score`` (None when scoring is off)."""
    stage = config.stages.score
    if not stage.enabled:
        return None
    return resolve_score_model(stage.model, stage.revision, stage.aesthetic_head, stage.dtype)
