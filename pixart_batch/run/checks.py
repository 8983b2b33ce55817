"""Checks of a run that need no writing: each refuses with one line before anything is written (and the
model-card settings warning, one line at the start of a run)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..prompts import PromptScan
    from ..spec import RunSpec

MAX_SIDE_FACTOR = 4
"""The largest image side accepted: this many times the model's native side (4096 px for PixArt-XL-2-1024);
beyond it a decode needs tens of GB per image and no bucket is near the requested shape."""


def check_quantization(config: RunConfig) -> None:
    """Refuse up front a T5 quantization this environment cannot run (not inside an actor, restarted forever)."""
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


def card_settings_warning(spec: RunSpec) -> str | None:
    """One line when an LCM or DMD checkpoint runs with steps or guidance far from its model card."""
    from ..families import card_settings, card_warning

    generation = spec.config.generation
    card = card_settings(spec.model.shipped_scheduler, spec.model.name)
    return card_warning(card, generation.num_inference_steps, generation.guidance_scale)
