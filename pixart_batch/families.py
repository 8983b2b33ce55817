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

from dataclasses import dataclass

from .errors import CheckpointError


@dataclass(frozen=True)
class ModelFamily:
    name: str
    """``alpha`` or ``sigma``."""
    pipeline_class: str
    """The diffusers pipeline class the DiT stage calls (``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline``)."""
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
                f"{where}: unknown component {component!r} ({_short(value)}); only {', '.join(COMPONENTS)} are loaded"
            )
        if not (isinstance(value, list) and len(value) == 2):
            raise CheckpointError(f"{where}: component {component!r} is declared as {_short(value)}, expected [library, class]")
        library, cls = value
        if library is None and cls is None:
            continue
        if not (isinstance(library, str) and isinstance(cls, str)):
            raise CheckpointError(
                f"{where}: component {component!r} is declared as {_short(value)}, expected [library, class] (two strings)"
            )
        if (library, cls) not in ALLOWED_CLASSES[component]:
            allowed = ", ".join(f"{lib}.{name}" for lib, name in sorted(ALLOWED_CLASSES[component]))
            raise CheckpointError(
                f"{where}: {component} is {library}.{cls}, which is not loaded (allowed: {allowed}; no custom or remote code)"
            )
        classes[component] = (str(library), str(cls))
    return classes


def _short(value: object, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to about ``limit`` characters, for a message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def scheduler_class_for(option: str, shipped: str) -> str:
    """The scheduler class that runs for ``generation.scheduler`` ``option`` on a checkpoint shipping ``shipped``."""
    if option == CHECKPOINT_SCHEDULER:
        return shipped
    return SCHEDULERS[option]
