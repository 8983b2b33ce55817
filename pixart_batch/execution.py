"""What an executor is given (Ray-free, config-free values): one execution spec per stage and the run's
execution settings, built from the config and the run's :class:`~pixart_batch.spec.RunSpec`.

The executors (:mod:`pixart_batch.executors`) read nothing else: which stages a phase runs and in what
order, each stage's registry name and constructor arguments (its typed spec), its resources and batch
size come from here, so no executor decides which stages exist, how they are built, or reads a config.

:attr:`ExecutionSpec.changed` names the stage settings that differ from their defaults (only those the
spec carries into a stage): an executor that cannot honour one of them says so in one line
(:func:`pixart_batch.executors.base.ignored_line`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import StagesConfig

if TYPE_CHECKING:
    from .config import RunConfig, StageConfig
    from .spec import RunSpec


@dataclass(frozen=True)
class FailureLimits:
    """When failing images mean the run itself is broken (``failures``)."""

    max_consecutive: int
    max_rate: float
    rate_after: int


@dataclass(frozen=True)
class StageExecution:
    """How one stage runs: what to build, with which resources, over batches of which size."""

    name: str
    """The stage's registry name (:data:`pixart_batch.stages.STAGES`); for the CPU batch steps (clean,
    write) the name of their config section."""
    source: str
    """The config section whose resources it takes (``stages.<source>``): ``denoise`` for the colocated
    DiT + VAE stage."""
    batch_size: int
    num_cpus: float
    num_gpus: float = 0.0
    concurrency: tuple[int, int] = (1, 1)
    """Actor pool size ``(min, max)``."""
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1
    """Batches one actor runs at once (the colocated stage on a GPU overlaps the VAE of one batch with
    the DiT of the next)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of the stage class (its typed spec), or keyword arguments of the batch
    function (clean, write). Empty in a spec built without a :class:`RunSpec` (resources only)."""
    reports_success: bool = False
    """Its output rows are finished images (the failure counter counts them)."""
    starts_images: bool = False
    """The first model stage of its phase: a stopping run gives it no new batch."""


@dataclass(frozen=True)
class RaySettings:
    """The run-level settings of a Ray execution (``ray.*``)."""

    address: str | None
    num_cpus: int | None
    no_progress_timeout_s: float
    task_num_cpus: float


@dataclass(frozen=True)
class ExecutionSpec:
    """Everything an executor is given: the stages of each phase and the run's execution settings."""

    executor: str
    """``ray.executor`` (``auto`` resolved by :func:`pixart_batch.executors.choose_executor`)."""
    local_max_images: int
    ray: RaySettings
    verbose: bool
    progress_interval_s: float
    images_per_prompt: int
    seed: int
    limits: FailureLimits
    uses_negative: bool
    """Negative prompts are encoded and fed to the DiT (CFG on)."""
    clean: StageExecution
    encode: StageExecution
    generate: tuple[StageExecution, ...]
    """The generate phase's model stages, in pipeline order."""
    write: StageExecution
    changed: tuple[tuple[str, Any], ...] = ()
    """``(dotted config name, value)`` of each stage setting it carries that differs from its default."""

    @classmethod
    def build(cls, config: RunConfig, spec: RunSpec | None = None) -> ExecutionSpec:
        """From the config; the stages' constructor arguments from ``spec`` (without one: resources only,
        for the resource checks and the choice of executor)."""
        stages, ray, failures = config.stages, config.ray, config.failures
        args = _StageArgs(config, spec)
        generate, changed = _generate_stages(config, args)
        output = config.output
        return cls(
            executor=ray.executor,
            local_max_images=ray.local_max_images,
            ray=RaySettings(ray.address, ray.num_cpus, ray.no_progress_timeout_s, ray.task_num_cpus),
            verbose=config.console.verbose,
            progress_interval_s=config.console.progress_interval_s,
            images_per_prompt=config.generation.images_per_prompt,
            seed=config.generation.seed,
            limits=FailureLimits(failures.max_consecutive, failures.max_rate, failures.rate_after),
            uses_negative=config.generation.cfg,
            clean=_stage("clean", "clean", stages.clean, args("clean")),
            encode=_stage("encode", "encode", stages.encode, args("encode")),
            generate=generate,
            write=_stage(
                "write",
                "write",
                stages.write,
                {"image_format": output.image_format, "quality": output.image_quality},
            ),
            changed=(
                *_changed(config, "clean", TASK_FIELDS),
                *_changed(config, "encode", POOL_FIELDS),
                *changed,
                *_changed(config, "write", TASK_FIELDS),
            ),
        )


POOL_FIELDS = ("batch_size", "num_cpus", "num_gpus", "concurrency")
"""The settings of an actor stage that say how it runs (not what it computes)."""
TASK_FIELDS = ("batch_size", "num_cpus")
"""The settings of a CPU batch step (clean, write): its tasks have no GPU and no pool."""


class _StageArgs:
    """The stages' constructor arguments from the run spec (none without one)."""

    def __init__(self, config: RunConfig, spec: RunSpec | None) -> None:
        self.config, self.spec = config, spec

    def __call__(self, name: str) -> dict[str, Any]:
        spec = self.spec
        if spec is None:
            return {}
        if name == "clean":
            generation = self.config.generation
            return {
                "spec": spec.clean_spec(),
                "generation": generation,
                "geometry": spec.geometry,
                "table": spec.table,
            }
        if name == "generate":  # the colocated DiT + VAE stage (stages.decode.colocate)
            decode = self.config.stages.decode
            return {
                "denoise": spec.denoise_spec(),
                "decode": spec.decode_spec(),
                "decode_batch_size": decode.batch_size,
            }
        made: dict[str, Any] = {
            "encode": spec.encode_spec,
            "denoise": spec.denoise_spec,
            "decode": spec.decode_spec,
            "score": spec.score_spec,
        }
        return {"spec": made[name]()}


def _stage(name: str, source: str, stage: StageConfig, args: dict[str, Any], **more: Any) -> StageExecution:
    return StageExecution(
        name=name,
        source=source,
        batch_size=stage.batch_size,
        num_cpus=stage.num_cpus,
        num_gpus=stage.num_gpus,
        concurrency=stage.pool_size(),
        dtype=stage.dtype,
        device=stage.device,
        args=args,
        **more,
    )


def _generate_stages(
    config: RunConfig, args: _StageArgs
) -> tuple[tuple[StageExecution, ...], list[tuple[str, Any]]]:
    """The generate phase's model stages and the settings they carry that differ from their defaults.

    With ``stages.decode.colocate`` one DiT + VAE stage sized by ``stages.denoise``, two batches in flight
    per GPU actor; else a DiT stage and a VAE stage; with ``stages.score.enabled`` then a CLIP stage on the
    decoded pixels before the write step encodes them."""
    stages = config.stages
    if stages.decode.colocate:
        threads = 2 if stages.denoise.num_gpus > 0 else 1
        colocated = args("generate")
        model = [
            _stage(
                "generate",
                "denoise",
                stages.denoise,
                colocated,
                threads=threads,
                reports_success=True,
                starts_images=True,
            )
        ]
        changed = [*_changed(config, "denoise", POOL_FIELDS), *_changed(config, "decode", ("batch_size",))]
        changed.append(("stages.decode.colocate", True))
    else:
        model = [
            _stage("denoise", "denoise", stages.denoise, args("denoise"), starts_images=True),
            _stage("decode", "decode", stages.decode, args("decode"), reports_success=True),
        ]
        changed = [*_changed(config, "denoise", POOL_FIELDS), *_changed(config, "decode", POOL_FIELDS)]
    if stages.score.enabled:
        model.append(_stage("score", "score", stages.score, args("score")))
        changed += _changed(config, "score", POOL_FIELDS)
    return tuple(model), changed


def _changed(config: RunConfig, source: str, fields: tuple[str, ...]) -> list[tuple[str, Any]]:
    """``(stages.<source>.<field>, value)`` of each of ``fields`` that differs from its default."""
    stage, default = getattr(config.stages, source), getattr(StagesConfig(), source)
    found = []
    for name in fields:
        value, usual = getattr(stage, name), getattr(default, name)
        if name == "concurrency":
            value, usual = stage.pool_size(), default.pool_size()
            value = value[0] if value[0] == value[1] else list(value)
            usual = usual[0] if usual[0] == usual[1] else list(usual)
        if value != usual:
            found.append((f"stages.{source}.{name}", value))
    return found
