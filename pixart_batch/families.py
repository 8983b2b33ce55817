"""Model families and schedulers: what a checkpoint is, read from its ``model_index.json``.

A *family* is what the pipeline class in ``model_index.json`` implies for a batch run:
the diffusers pipeline class the DiT stage drives, the default T5 token limit, and the
caption cleaning it uses. The aspect-ratio table follows the transformer's ``sample_size``
(:mod:`.buckets`) and the VAE scaling its ``vae/config.json`` — both exactly as diffusers
picks them — so a family only names what is not in the component configs.

Only classes that diffusers / transformers ship and that a PixArt pipeline can use are
accepted; anything else (another library, a custom class, remote code) is refused with
one line before any work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import CheckpointError


@dataclass(frozen=True)
class ModelFamily:
    name: str
    """``alpha`` or ``sigma``."""
    pipeline_class: str
    """The diffusers pipeline class the DiT stage calls (``PixArtAlphaPipeline`` /
    ``PixArtSigmaPipeline``)."""
    max_sequence_length: int
    """The T5 token limit the family was trained with (120 for α, 300 for Σ)."""


FAMILIES = {
    "PixArtAlphaPipeline": ModelFamily("alpha", "PixArtAlphaPipeline", 120),
    "PixArtSigmaPipeline": ModelFamily("sigma", "PixArtSigmaPipeline", 300),
}
FAMILY_NAMES = {family.name: family for family in FAMILIES.values()}

SCHEDULERS = {
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "sa-solver": "SASolverScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "lcm": "LCMScheduler",
}
"""``generation.scheduler`` options → diffusers classes (built with ``from_config`` on the checkpoint's
scheduler config). ``checkpoint`` (the default) runs the scheduler the checkpoint ships."""
CHECKPOINT_SCHEDULER = "checkpoint"
SCHEDULER_OVERRIDES: dict[str, dict[str, object]] = {
    # PixArt's config says algorithm_type "dpmsolver++", which SA-Solver does not have; diffusers'
    # PixArt docs build it with from_config(..., algorithm_type="data_prediction").
    "sa-solver": {"algorithm_type": "data_prediction"},
}
"""Keyword arguments given to ``from_config`` with the checkpoint's scheduler config, per option."""

ALLOWED_CLASSES: dict[str, set[tuple[str, str]]] = {
    # Older PixArt checkpoints declare the generic Transformer2DModel; diffusers remaps it to
    # PixArtTransformer2DModel from its config (norm_type "ada_norm_single").
    "transformer": {("diffusers", "PixArtTransformer2DModel"), ("diffusers", "Transformer2DModel")},
    "vae": {("diffusers", "AutoencoderKL")},
    "text_encoder": {("transformers", "T5EncoderModel")},
    "tokenizer": {("transformers", "T5Tokenizer"), ("transformers", "T5TokenizerFast")},
    "scheduler": {("diffusers", name) for name in SCHEDULERS.values()},
}
COMPONENTS = tuple(ALLOWED_CLASSES)


def family_of(model_index: dict, where: str) -> ModelFamily:
    """The family a ``model_index.json`` declares, or a one-line refusal."""
    name = model_index.get("_class_name")
    if not isinstance(name, str):
        found = "missing" if "_class_name" not in model_index else f"{_short(name)}"
        raise CheckpointError(f"{where}: '_class_name' is {found}, expected a pipeline class name (a string)")
    if name not in FAMILIES:
        known = ", ".join(FAMILIES)
        raise CheckpointError(f"{where}: pipeline class {name!r} is not supported (known: {known})")
    return FAMILIES[name]


def declared_classes(model_index: dict, where: str) -> dict[str, tuple[str, str]]:
    """``{component: (library, class)}`` for every component ``model_index.json`` declares.

    Refuses unknown components, classes outside :data:`ALLOWED_CLASSES` and custom
    (remote-code) entries, naming the component. A component declared ``[null, null]`` is
    absent (left out of the result).
    """
    classes: dict[str, tuple[str, str]] = {}
    for component, value in model_index.items():
        if component.startswith("_"):
            continue
        if component not in ALLOWED_CLASSES:
            if isinstance(value, list) and value and value[0] is None:
                continue  # an optional component that is not there (e.g. PixArt's unused ones)
            raise CheckpointError(
                f"{where}: unknown component {component!r} ({_short(value)}); "
                f"only {', '.join(COMPONENTS)} are loaded"
            )
        if not (isinstance(value, list) and len(value) == 2):
            raise CheckpointError(
                f"{where}: component {component!r} is declared as {_short(value)}, expected [library, class]"
            )
        library, cls = value
        if library is None and cls is None:
            continue
        if not (isinstance(library, str) and isinstance(cls, str)):
            raise CheckpointError(
                f"{where}: component {component!r} is declared as {_short(value)}, "
                "expected [library, class] (two strings)"
            )
        if (library, cls) not in ALLOWED_CLASSES[component]:
            allowed = ", ".join(f"{lib}.{name}" for lib, name in sorted(ALLOWED_CLASSES[component]))
            raise CheckpointError(
                f"{where}: {component} is {library}.{cls}, which is not loaded "
                f"(allowed: {allowed}; no custom or remote code)"
            )
        classes[component] = (str(library), str(cls))
    return classes


def _short(value: object, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to about ``limit`` characters, for a message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def scheduler_class_for(option: str, shipped: str) -> str:
    """The scheduler class that runs for ``generation.scheduler`` ``option`` on a checkpoint shipping
    ``shipped``."""
    if option == CHECKPOINT_SCHEDULER:
        return shipped
    return SCHEDULERS[option]


# --------------------------------------------------------------------------- the model cards' settings


@dataclass(frozen=True)
class CardSettings:
    """A distilled checkpoint's model-card settings, and how far from them a run may go unwarned."""

    kind: str
    steps: int
    guidance_scale: float
    timesteps: tuple[int, ...] | None
    max_steps: int
    """More steps than this is far from the card."""
    max_guidance: float
    """A larger ``guidance_scale`` than this is far from the card."""
    recipe: str
    """The shipped recipe that runs the card's settings."""


LCM_CARD = CardSettings(
    "LCM", 4, 0.0, None, max_steps=8, max_guidance=2.0, recipe="configs/pixart-lcm-1024.yaml"
)
"""PixArt-LCM's card: 4 steps, guidance 0 (LCMScheduler; a few more steps or a little guidance are fine)."""
DMD_CARD = CardSettings(
    "DMD", 1, 1.0, (400,), max_steps=2, max_guidance=1.5, recipe="configs/pixart-dmd-512.yaml"
)
"""PixArt-α DMD's card: one step at timestep 400, guidance 1 (a one-step generator)."""
CARDS = {"LCMScheduler": LCM_CARD}
"""Shipped scheduler class → the card its checkpoints carry (an LCM checkpoint ships ``LCMScheduler``)."""


def card_settings(shipped_scheduler: str, name: str) -> CardSettings | None:
    """The card settings of a checkpoint shipping ``shipped_scheduler`` named ``name`` (hub id or folder):
    LCM by its scheduler; DMD (which ships a plain DDPMScheduler) by ``DMD`` in its name."""
    if re.search(r"(^|[^a-z])dmd([^a-z]|$)", name.rstrip("/").rsplit("/", 1)[-1].lower()):
        return DMD_CARD
    return CARDS.get(shipped_scheduler)


def card_warning(card: CardSettings | None, steps: int, guidance_scale: float) -> str | None:
    """One line when ``steps`` / ``guidance_scale`` are far from ``card`` (None when within range)."""
    if card is None:
        return None
    far = [f"{steps} steps"] if steps > card.max_steps else []
    far += [f"guidance {guidance_scale:g}"] if guidance_scale > card.max_guidance else []
    if not far:
        return None
    timesteps = f", timesteps {list(card.timesteps)}" if card.timesteps else ""
    return (
        f"warning: this {card.kind} checkpoint runs with {' and '.join(far)}; its model card says "
        f"{card.steps} step{'s' * (card.steps != 1)}{timesteps}, guidance {card.guidance_scale:g}: "
        f"use {card.recipe} (or --steps / --guidance-scale)"
    )
