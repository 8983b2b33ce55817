"""Each config field carries its own facts (role, range, CLI flag, help) and every table is derived
from them: the derived tables equal the hand-kept ones they replaced (copied here from the last
version that kept them), README's config reference is the generated one, and a test-only field is
picked up everywhere with no other edit."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from pixart_batch import config_tables
from pixart_batch.api import OVERRIDES
from pixart_batch.cli import build_parser
from pixart_batch.config import GenerationConfig, RunConfig
from pixart_batch.config_fields import SEED, Range, Role, above, at_least, check_ranges, setting
from pixart_batch.config_ranges import RANGES
from pixart_batch.config_reference import COMMAND, END, START, reference_markdown, replace_reference
from pixart_batch.errors import ConfigError
from pixart_batch.spec import ROLES, check_classified, role_of

ROOT = Path(__file__).parent.parent

TODAY_ROLES: dict[str, str] = {
    "model.path": "checkpoint",
    "model.tiny_seed": "checkpoint",
    "model.revision": "checkpoint",
    "model.components_from": "checkpoint",
    "model.max_sequence_length": "embedding",
    "model.clean_caption": "embedding",
    "generation.seed": "image",
    "generation.images_per_prompt": "image",
    "generation.num_inference_steps": "image",
    "generation.guidance_scale": "image",
    "generation.negative_prompt": "image",
    "generation.width": "image",
    "generation.height": "image",
    "generation.scheduler": "image",
    "generation.timesteps": "image",
    "stages.*.batch_size": "operational",
    "stages.*.num_gpus": "operational",
    "stages.*.num_cpus": "operational",
    "stages.*.concurrency": "operational",
    "stages.clean.dtype": "operational",
    "stages.write.dtype": "operational",
    "stages.encode.dtype": "embedding",
    "stages.encode.quantization": "embedding",
    "stages.denoise.dtype": "image",
    "stages.denoise.compile": "operational",
    "stages.denoise.step_cache": "image",
    "stages.denoise.step_cache_threshold": "image",
    "stages.denoise.step_cache_interval": "image",
    "stages.denoise.fp8": "image",
    "stages.decode.dtype": "image",
    "stages.decode.vae_tiling": "image",
    "stages.decode.vae_slicing": "operational",
    "stages.decode.colocate": "operational",
    "stages.score.enabled": "checkpoint",
    "stages.score.model": "checkpoint",
    "stages.score.revision": "checkpoint",
    "stages.score.aesthetic_head": "checkpoint",
    "stages.score.dtype": "checkpoint",
    "output.image_format": "image",
    "output.image_quality": "image",
    "output.rows_per_shard": "operational",
    "output.row_group_size": "operational",
    "output.store_rows_per_part": "operational",
    "output.store": "operational",
    "output.format": "image",
    "failures.max_consecutive": "operational",
    "failures.max_rate": "operational",
    "failures.rate_after": "operational",
    "ray.address": "operational",
    "ray.num_cpus": "operational",
    "ray.no_progress_timeout_s": "operational",
    "ray.executor": "operational",
    "ray.local_max_images": "operational",
    "ray.task_num_cpus": "operational",
    "console.progress_interval_s": "operational",
    "console.verbose": "operational",
    "estimate.gpu": "operational",
    "estimate.usd_per_gpu_hour": "operational",
}

TODAY_RANGES: dict[str, Range] = {
    "model.tiny_seed": SEED,
    "model.max_sequence_length": at_least(1),
    "generation.seed": SEED,
    "generation.images_per_prompt": Range(1, 99_999),
    "generation.num_inference_steps": at_least(1),
    "generation.guidance_scale": at_least(0.0),
    "generation.width": at_least(8),
    "generation.height": at_least(8),
    "generation.timesteps": Range(0, 1000, high_open=True),
    "stages.*.batch_size": at_least(1),
    "stages.*.num_gpus": at_least(0.0),
    "stages.*.num_cpus": at_least(0.0),
    "stages.*.concurrency": at_least(1),
    "stages.denoise.step_cache_threshold": above(0.0),
    "stages.denoise.step_cache_interval": at_least(1),
    "output.image_quality": Range(1, 100),
    "output.rows_per_shard": at_least(1),
    "output.row_group_size": at_least(1),
    "output.store_rows_per_part": at_least(1),
    "failures.max_consecutive": at_least(1),
    "failures.max_rate": Range(0.0, 1.0, low_open=True),
    "failures.rate_after": at_least(1),
    "ray.num_cpus": at_least(1),
    "ray.no_progress_timeout_s": above(0.0),
    "ray.local_max_images": at_least(0),
    "ray.task_num_cpus": above(0.0),
    "console.progress_interval_s": above(0.0),
    "estimate.usd_per_gpu_hour": above(0.0),
}

TODAY_OVERRIDES: dict[str, tuple[str, ...]] = {
    "model": ("model.path",),
    "max_sequence_length": ("model.max_sequence_length",),
    "store": ("output.store",),
    "executor": ("ray.executor",),
    "verbose": ("console.verbose",),
    "progress_interval": ("console.progress_interval_s",),
    "image_format": ("output.image_format",),
    "output_format": ("output.format",),
    "seed": ("generation.seed",),
    "images_per_prompt": ("generation.images_per_prompt",),
    "steps": ("generation.num_inference_steps",),
    "guidance_scale": ("generation.guidance_scale",),
    "scheduler": ("generation.scheduler",),
    "batch_size": ("stages.denoise.batch_size", "stages.decode.batch_size"),
    "gpu": ("estimate.gpu",),
    "usd_per_gpu_hour": ("estimate.usd_per_gpu_hour",),
}


def test_the_derived_tables_are_the_hand_kept_ones():
    assert {name: role.value for name, role in ROLES.items()} == TODAY_ROLES
    assert RANGES == TODAY_RANGES
    assert OVERRIDES == TODAY_OVERRIDES
    assert (
        role_of("stages.encode.dtype") == Role.EMBEDDING
        and role_of("stages.write.batch_size") == "operational"
    )


def test_stages_restate_only_what_differs():
    """``dtype`` has each stage's role; ``--batch-size`` sets the DiT's and the VAE's batch size only."""
    assert {stage: role_of(f"stages.{stage}.dtype") for stage in ("clean", "encode", "denoise", "score")} == {
        "clean": "operational",
        "encode": "embedding",
        "denoise": "image",
        "score": "checkpoint",
    }
    assert OVERRIDES["batch_size"] == ("stages.denoise.batch_size", "stages.decode.batch_size")


def test_readme_holds_the_generated_config_reference():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert START in readme and END in readme
    assert replace_reference(readme, reference_markdown()) == readme, (
        f"README's config reference differs from the config fields; run {COMMAND}"
    )


def _actions(command: str) -> dict[str, argparse.Action]:
    """``dest`` → argparse action of one sub-command's flags."""
    (commands,) = [action for action in build_parser()._actions if action.dest == "command"]
    return {action.dest: action for action in commands.choices[command]._actions}  # type: ignore[index]


def test_cli_flags_take_their_help_and_type_from_the_fields():
    generate = _actions("generate")
    assert generate["seed"].help == (
        "Run seed; each image's seed derives from (seed, prompt id, image index) only. (generation.seed)"
    )
    assert generate["batch_size"].help.endswith("(stages.denoise.batch_size, stages.decode.batch_size)")  # type: ignore[union-attr]
    assert (generate["guidance_scale"].type, generate["steps"].type) == (float, int)
    assert list(generate["image_format"].choices) == ["png", "jpeg", "webp"]  # type: ignore[arg-type]
    assert {dest for dest in OVERRIDES if dest in _actions("plan")} == {
        "model",
        "images_per_prompt",
        "steps",
        "gpu",
        "usd_per_gpu_hour",
    }
    args = build_parser().parse_args(["generate", "--prompts", "p", "--output", "o", "--verbose"])
    assert args.verbose is True and args.seed is None and args.executor is None


# --------------------------------------------------------------------------- a new field: one edit


@dataclasses.dataclass(frozen=True)
class SharperGeneration(GenerationConfig):
    sharpness: float = setting(
        0.5, role=Role.IMAGE, range=Range(0.0, 1.0), flag="sharpness", help="How sharp (test only)."
    )


@dataclasses.dataclass(frozen=True)
class SharperConfig(RunConfig):
    generation: SharperGeneration = dataclasses.field(default_factory=SharperGeneration)


def test_a_new_field_is_one_setting():
    """The ``setting(...)`` above is the only edit: its role, range, flag and reference follow."""
    check_classified(SharperConfig)
    assert config_tables.roles(SharperConfig)["generation.sharpness"] == Role.IMAGE
    assert config_tables.ranges(SharperConfig)["generation.sharpness"] == Range(0.0, 1.0)
    assert config_tables.overrides(SharperConfig)["sharpness"] == ("generation.sharpness",)
    assert "generation.sharpness: in [0, 1]" in config_tables.reference(SharperConfig)
    row = " | ".join(
        (
            "| `generation.sharpness: in [0, 1]`",
            "`float`",
            "`0.5`",
            "image",
            "`--sharpness`",
            "How sharp (test only). |",
        )
    )
    assert row in reference_markdown(SharperConfig).splitlines()
    with pytest.raises(
        ConfigError, match=r"generation.sharpness: 2 is out of range \(must be a finite number"
    ):
        SharperConfig(generation=SharperGeneration(sharpness=2.0))
    assert "generation.sharpness" not in ROLES  # the real config is unchanged


def test_a_plain_field_is_refused_by_name():
    Plain = dataclasses.make_dataclass(
        "Plain", [("retries", int, dataclasses.field(default=3))], bases=(GenerationConfig,), frozen=True
    )
    Config = dataclasses.make_dataclass(
        "Config",
        [("generation", Plain, dataclasses.field(default_factory=Plain))],
        bases=(RunConfig,),
        frozen=True,
    )
    with pytest.raises(TypeError, match=r"without a role .*: generation\.retries$"):
        check_classified(Config)
    with pytest.raises(TypeError, match="generation.retries has no range"):
        check_ranges(Config())
