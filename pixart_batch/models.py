"""Resolving and loading checkpoints: safetensors only, no remote code.

``resolve_model`` runs on the driver before any work starts, so a missing or unsafe
checkpoint is a one-line error, not a crash inside an actor.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config import TINY_MODEL, ModelConfig
from .errors import CheckpointError, HubUnavailableError, first_line
from .families import (
    ALLOWED_CLASSES,
    COMPONENTS,
    FAMILIES,
    ModelFamily,
    declared_classes,
    family_of,
    scheduler_class_for,
)
from .parsing import DuplicateKeyError, loads_json

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
COMPONENTS_FROM = "model.components_from"
"""The config key errors about the checkpoint supplying missing components start with."""


@dataclass(frozen=True)
class Component:
    """One component of a resolved checkpoint: its class and where it loads from."""

    name: str
    """``transformer``, ``vae``, ``text_encoder``, ``tokenizer`` or ``scheduler``."""
    library: str
    cls: str
    source: str
    """What ``from_pretrained`` is given for it (a hub id or a local directory)."""


@dataclass(frozen=True)
class ModelSource:
    """What a stage needs to load components: per component, its declared class and its checkpoint.
    Picklable and Ray-free."""

    name: str
    """The checkpoint (``model.path`` as resolved)."""
    components: tuple[Component, ...]

    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise CheckpointError(f"{self.name}: checkpoint declares no {name}")

    def class_of(self, name: str) -> tuple[str, str]:
        component = self.component(name)
        return component.library, component.cls


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint location: the name given to ``from_pretrained`` and a local copy of its files."""

    name: str
    local_dir: Path
    revision: str | None = None

    @property
    def is_hub(self) -> bool:
        """Loaded by hub id (its name and revision identify it), not from a local directory."""
        return self.name != str(self.local_dir)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    """What ``from_pretrained`` is given (a hub id or a local directory)."""
    local_dir: Path
    """A local copy of the checkpoint (the hub cache snapshot for a hub id)."""
    revision: str | None = None
    family: ModelFamily = FAMILIES["PixArtAlphaPipeline"]
    """The model family ``model_index.json`` declares (its pipeline class)."""
    components: tuple[Component, ...] = ()
    """Every component, as ``model_index.json`` declares it (checked against the allow-list), from this
    checkpoint or — for what it lacks — from ``model.components_from``."""
    base: Checkpoint | None = None
    """The ``model.components_from`` checkpoint, if one supplies components."""

    @property
    def is_hub(self) -> bool:
        """Loaded by hub id (its name and revision identify it), not from a local directory."""
        return self.name != str(self.local_dir)

    @property
    def source(self) -> ModelSource:
        return ModelSource(self.name, self.components)

    @property
    def shipped_scheduler(self) -> str:
        return self.source.class_of("scheduler")[1]

    def checkpoint_of(self, component: str) -> Checkpoint:
        if self.base is not None and self.source.component(component).source == self.base.name:
            return self.base
        return Checkpoint(self.name, self.local_dir, self.revision)


def _read_model_index(root: Path) -> dict:
    path = root / "model_index.json"
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{root}: not a diffusers checkpoint (no model_index.json)") from None
    except DuplicateKeyError as exc:
        raise CheckpointError(exc.describe(str(path))) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _present(
    root: Path, classes: dict[str, tuple[str, str]], weights: bool = True
) -> dict[str, tuple[str, str]]:
    """The declared components whose folder exists, each checked (unless ``weights`` is False: configs
    only): safetensors weights, a tokenizer file."""
    found = {}
    for component, declared in classes.items():
        folder = root / component
        if not folder.is_dir():
            continue
        if not weights:
            found[component] = declared
            continue
        files = [p.name for p in folder.iterdir() if p.is_file()]
        if component in ("text_encoder", "transformer", "vae") and not any(
            name.endswith(".safetensors") for name in files
        ):
            pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
            what = f"only pickle weights ({', '.join(sorted(pickles))})" if pickles else "no weights"
            raise CheckpointError(
                f"{folder}: {what}; only safetensors are loaded (convert the checkpoint to safetensors)"
            )
        if component == "tokenizer" and not set(files) & {"spiece.model", "tokenizer.json"}:
            raise CheckpointError(f"{folder}: no spiece.model or tokenizer.json")
        found[component] = declared
    return found


def _check_local(
    root: Path, base: Checkpoint | None = None, weights: bool = True
) -> tuple[ModelFamily, tuple[Component, ...]]:
    """Check a checkpoint directory is a supported PixArt pipeline that loads from safetensors only
    (``weights`` False: its configs only); components it lacks come from ``base``
    (``model.components_from``) when one is given."""
    index = _read_model_index(root)
    where = str(root / "model_index.json")
    family = family_of(index, where)
    own = _present(root, declared_classes(index, where), weights)
    supplied: dict[str, tuple[str, str]] = {}
    if base is not None:
        base_where = str(base.local_dir / "model_index.json")
        try:
            base_index = _read_model_index(base.local_dir)
            family_of(base_index, base_where)
            supplied = _present(base.local_dir, declared_classes(base_index, base_where), weights)
        except CheckpointError as exc:
            raise CheckpointError(f"{COMPONENTS_FROM}: {exc}") from None
    components = []
    for name in COMPONENTS:
        if name in own:
            components.append(Component(name, *own[name], str(root)))
        elif name in supplied and base is not None:
            components.append(Component(name, *supplied[name], base.name))
        else:
            hint = (
                " (set model.components_from to a checkpoint that has it)"
                if base is None
                else f" nor does {base.name}"
            )
            raise CheckpointError(f"{root}: the checkpoint has no {name}{hint}")
    return family, tuple(components)


def resolve_model(config: ModelConfig, weights: bool = True) -> ResolvedModel:
    """Find the checkpoint (building the tiny one on first use) and check it is safe to load.

    ``weights`` False is the light path (``pixart-batch plan``): a hub checkpoint's JSON configs and
    tokenizer only are fetched (never its weights) and no weight file is checked."""
    base = None
    if config.components_from:
        try:
            found = _locate(config.components_from, None, weights)
        except CheckpointError as exc:
            raise type(exc)(f"{COMPONENTS_FROM}: {exc}") from None
        base = Checkpoint(found.name, found.local_dir, found.revision)
    if config.path == TINY_MODEL:
        from .tiny import cached_tiny_checkpoint

        primary = Checkpoint(str(path := cached_tiny_checkpoint(config.tiny_seed)), path)
    else:
        primary = _locate(config.path, config.revision, weights)
    family, components = _check_local(primary.local_dir, base, weights)
    # A component from this checkpoint loads by the name the user gave (hub id or directory).
    components = tuple(
        Component(c.name, c.library, c.cls, primary.name) if c.source == str(primary.local_dir) else c
        for c in components
    )
    used_base = base if base is not None and any(c.source == base.name for c in components) else None
    return ResolvedModel(primary.name, primary.local_dir, primary.revision, family, components, used_base)


def _locate(path: str, revision: str | None, weights: bool = True) -> Checkpoint:
    """A local checkpoint directory, or a hub id fetched (safetensors and configs only; ``weights``
    False: configs and tokenizer only) into the cache."""
    local = Path(os.path.expanduser(path))
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        if not local.is_dir():
            raise CheckpointError(f"{path}: checkpoint not found (no such directory)")
        return Checkpoint(str(local.resolve()), local.resolve())
    return _resolve_hub(path, revision, weights)


HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
"""What is fetched of a hub checkpoint to run it: safetensors weights, configs, tokenizer files (no
pickles)."""
HUB_CONFIG_PATTERNS = ["*.json", "tokenizer/*"]
"""What is fetched of a hub checkpoint to plan a run (``weights`` False): its configs and tokenizer."""


def _resolve_hub(path: str, revision: str | None, weights: bool = True) -> Checkpoint:
    """Fetch a hub checkpoint's files (:data:`HUB_PATTERNS`, or :data:`HUB_CONFIG_PATTERNS`) into the
    local cache; offline, what the cache holds."""
    from huggingface_hub import snapshot_download

    patterns = HUB_PATTERNS if weights else HUB_CONFIG_PATTERNS
    try:
        local = Path(snapshot_download(path, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # the hub raises many types; all mean "cannot get it"
        what = "checkpoint" if weights else "checkpoint configs"
        raise HubUnavailableError(
            f"{path}: {what} not found locally or on the hub ({first_line(exc, limit=None)})"
        ) from None
    return Checkpoint(path, local, revision)


def _hash_components(model: ResolvedModel, components: tuple[str, ...]) -> str:
    """A hash of the files of some components (weights whole up to 64 MiB per file; larger files by
    their safetensors header — names, dtypes, shapes, offsets — and size) plus a hub id's revision."""
    digest = hashlib.sha256()
    for component in components:
        checkpoint = model.checkpoint_of(component)
        # a hub id: its name and revision are part of what it is; a local dir is its files
        if checkpoint.is_hub:
            digest.update(f"{component}@{checkpoint.name}@{checkpoint.revision}".encode())
        digest_folder(digest, checkpoint.local_dir / component, component)
    return digest.hexdigest()[:32]


def digest_folder(digest: Any, folder: Path, label: str) -> None:
    """Feed the files directly in ``folder`` to ``digest`` (a ``hashlib`` hash), each by ``label/name``:
    whole up to 64 MiB, larger ones by their safetensors header — names, dtypes, shapes, offsets — and
    size."""
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.is_file():
            continue
        digest.update(f"{label}/{path.name}".encode())
        size = path.stat().st_size
        with open(path, "rb") as handle:
            if size <= 64 * 2**20:
                digest.update(handle.read())
            elif path.suffix == ".safetensors":
                header_len = int.from_bytes(handle.read(8), "little")
                digest.update(handle.read(header_len) + str(size).encode())
            else:
                digest.update(str(size).encode())


def encoder_identity(model: ResolvedModel) -> str:
    """What determines the text encoder's outputs: tokenizer + T5 config and weights."""
    return _hash_components(model, ("tokenizer", "text_encoder"))


def checkpoint_identity(model: ResolvedModel) -> str:
    """What determines the images: every component of the checkpoint."""
    return _hash_components(model, COMPONENTS)


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class Pretrained(Protocol):
    """A component class: diffusers' and transformers' models, tokenizers and schedulers alike."""

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any: ...


def component_type(source: ModelSource, component: str) -> type[Pretrained]:
    """The class ``model_index.json`` declares for ``component`` (already checked against the allow-list)."""
    import importlib

    library, cls = source.class_of(component)
    if (library, cls) not in ALLOWED_CLASSES[component]:  # a source built by hand must pass the same check
        raise CheckpointError(f"{source.name}: {component} class {library}.{cls} is not allowed")
    return getattr(importlib.import_module(library), cls)


def load_component(source: ModelSource, component: str, dtype: str = "float32", device: str = "cpu"):
    """Load one component as the checkpoint declares it (tokenizer and scheduler included).

    Model weights come from safetensors only (``use_safetensors=True``), in ``dtype``
    (``torch_dtype=`` at load, never a cast afterwards), moved to ``device`` and put in eval mode.
    """
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar per model, per process
    cls = component_type(source, component)
    where = source.component(component).source
    if component in ("tokenizer", "scheduler"):
        return cls.from_pretrained(where, subfolder=component)
    module = cls.from_pretrained(
        where, subfolder=component, torch_dtype=torch_dtype(dtype), use_safetensors=True
    )
    return module.to(device).eval()


def load_scheduler(source: ModelSource, option: str):
    """The checkpoint's scheduler, or the ``generation.scheduler`` option built from its config
    (``from_config``, as diffusers' docs swap schedulers)."""
    import diffusers

    from .families import SCHEDULER_OVERRIDES

    shipped = load_component(source, "scheduler")
    wanted = scheduler_class_for(option, type(shipped).__name__)
    if type(shipped).__name__ == wanted and option not in SCHEDULER_OVERRIDES:
        return shipped
    return getattr(diffusers, wanted).from_config(shipped.config, **SCHEDULER_OVERRIDES.get(option, {}))
