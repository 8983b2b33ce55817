"""Resolving and loading checkpoints: safetensors only, no remote code.

``resolve_model`` runs on the driver before any work starts, so a missing or unsafe
checkpoint is a one-line error, not a crash inside an actor.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import TINY_MODEL, ModelConfig
from .errors import CheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
COMPONENTS = ("text_encoder", "tokenizer", "transformer", "vae", "scheduler")


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    """What ``from_pretrained`` is given (a hub id or a local directory)."""
    local_dir: Path
    """A local copy of the checkpoint (the hub cache snapshot for a hub id)."""
    revision: str | None = None

    @property
    def is_hub(self) -> bool:
        """Loaded by hub id (its name and revision identify it), not from a local directory."""
        return self.name != str(self.local_dir)


def _check_local(root: Path) -> None:
    if not (root / "model_index.json").is_file():
        raise CheckpointError(f"{root}: not a diffusers checkpoint (no model_index.json)")
    for component in ("text_encoder", "transformer", "vae"):
        folder = root / component
        if not folder.is_dir():
            raise CheckpointError(f"{root}: checkpoint has no {component}/ folder")
        weights = [p.name for p in folder.iterdir() if p.is_file()]
        if not any(name.endswith(".safetensors") for name in weights):
            pickles = [name for name in weights if name.endswith(PICKLE_SUFFIXES)]
            what = f"only pickle weights ({', '.join(sorted(pickles))})" if pickles else "no weights"
            raise CheckpointError(f"{folder}: {what}; only safetensors are loaded (convert the checkpoint to safetensors)")


def resolve_model(config: ModelConfig) -> ResolvedModel:
    """Find the checkpoint (building the tiny one on first use) and check it is safe to load."""
    if config.path == TINY_MODEL:
        from .tiny import cached_tiny_checkpoint

        path = cached_tiny_checkpoint(config.tiny_seed)
        return ResolvedModel(name=str(path), local_dir=path)
    local = Path(os.path.expanduser(config.path))
    if local.exists() or config.path.startswith((".", "/", "~")) or config.path.count("/") != 1:
        if not local.is_dir():
            raise CheckpointError(f"{config.path}: checkpoint not found (no such directory)")
        _check_local(local)
        return ResolvedModel(name=str(local.resolve()), local_dir=local.resolve())
    return _resolve_hub(config)


def _resolve_hub(config: ModelConfig) -> ResolvedModel:
    """Fetch the safetensors files of a hub checkpoint into the local cache (no pickles)."""
    from huggingface_hub import snapshot_download

    try:
        local = Path(
            snapshot_download(
                config.path,
                revision=config.revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"],
            )
        )
    except Exception as exc:  # the hub raises many types; all mean "cannot get it"
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{config.path}: checkpoint not found locally or on the hub ({message})") from None
    _check_local(local)
    return ResolvedModel(name=config.path, local_dir=local, revision=config.revision)


def _hash_components(model: ResolvedModel, components: tuple[str, ...]) -> str:
    """A hash of the files of some components (weights whole up to 64 MiB per file; larger files by
    their safetensors header — names, dtypes, shapes, offsets — and size) plus a hub id's revision."""
    digest = hashlib.sha256()
    if model.is_hub:  # a hub id: its name and revision are part of what it is; a local dir is its files
        digest.update(f"{model.name}@{model.revision}".encode())
    for component in components:
        folder = model.local_dir / component
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not path.is_file():
                continue
            digest.update(f"{component}/{path.name}".encode())
            size = path.stat().st_size
            with open(path, "rb") as handle:
                if size <= 64 * 2**20:
                    digest.update(handle.read())
                elif path.suffix == ".safetensors":
                    header_len = int.from_bytes(handle.read(8), "little")
                    digest.update(handle.read(header_len) + str(size).encode())
                else:
                    digest.update(str(size).encode())
    return digest.hexdigest()[:32]


def encoder_identity(model: ResolvedModel) -> str:
    """What determines the text encoder's outputs: tokenizer + T5 config and weights."""
    return _hash_components(model, ("tokenizer", "text_encoder"))


def checkpoint_identity(model: ResolvedModel) -> str:
    """What determines the images: every component of the checkpoint."""
    return _hash_components(model, COMPONENTS)


def scheduler_name(model: ResolvedModel) -> str:
    data = json.loads((model.local_dir / "scheduler" / "scheduler_config.json").read_text())
    return str(data.get("_class_name", "unknown"))


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def load_component(model_name: str, component: str, dtype: str, device: str):
    """Load one component (``text_encoder``, ``transformer``, ``vae``, ``tokenizer``, ``scheduler``)."""
    if component == "tokenizer":
        from transformers import T5Tokenizer

        return T5Tokenizer.from_pretrained(model_name, subfolder="tokenizer")
    if component == "scheduler":
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler.from_pretrained(model_name, subfolder="scheduler")
    if component == "text_encoder":
        from transformers import T5EncoderModel

        module = T5EncoderModel.from_pretrained(model_name, subfolder="text_encoder", torch_dtype=torch_dtype(dtype), use_safetensors=True)
    elif component == "transformer":
        from diffusers import PixArtTransformer2DModel

        module = PixArtTransformer2DModel.from_pretrained(model_name, subfolder="transformer", torch_dtype=torch_dtype(dtype), use_safetensors=True)
    elif component == "vae":
        from diffusers import AutoencoderKL

        module = AutoencoderKL.from_pretrained(model_name, subfolder="vae", torch_dtype=torch_dtype(dtype), use_safetensors=True)
    else:
        raise ValueError(component)
    return module.to(device).eval()
