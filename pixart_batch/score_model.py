"""The quality-score model: a ``transformers`` CLIP (hub id, local directory or ``tiny``) and an optional
aesthetic head, resolved, checked (safetensors only, the head's shape) and identified by their files.

The identity (:meth:`ScoreModel.identity`) is what the output's settings record under ``score``: a
scored output resumes scored, and the settings guard refuses a run (or a ``score`` command) that would
mix scores of another model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError, first_line
from .schema import SCORE_SETTING

__all__ = ["SCORE_SETTING", "TINY_CLIP", "ScoreModel", "check_head", "resolve_score_model"]

TINY_CLIP = "tiny"
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt"]


@dataclass(frozen=True)
class ScoreModel:
    name: str
    """The model as given (hub id, ``tiny``) or ``local model`` for a directory (paths are not settings)."""
    local_dir: Path
    revision: str | None
    files: str
    """A hash of the model's files (configs, tokenizer, weights)."""
    projection_dim: int
    head: Path | None = None
    head_files: str | None = None
    dtype: str = "float32"

    @property
    def source(self) -> str:
        """What the actors load: a hub id (each node's own cache, as for the checkpoint) or the local
        directory."""
        return self.name if self.name not in (TINY_CLIP, "local model") else str(self.local_dir)

    def identity(self) -> dict[str, Any]:
        """What determines the scores: recorded in the settings (JSON)."""
        return {
            "model": self.name,
            "revision": self.revision,
            "files": self.files,
            "aesthetic_head": self.head_files,
            "dtype": self.dtype,
        }


def _hash_folder(folder: Path) -> str:
    """The model's files, as the checkpoint's are hashed (:func:`pixart_batch.models.digest_folder`)."""
    from .models import digest_folder

    digest = hashlib.sha256()
    digest_folder(digest, folder, "clip")
    return digest.hexdigest()[:32]


def _check_folder(folder: Path, shown: str) -> int:
    """Refuse a folder that is not a safetensors CLIP; returns its projection dimension."""
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if not any(name.endswith(".safetensors") for name in files):
        pickles = sorted(name for name in files if name.endswith(_PICKLES))
        what = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
        raise CheckpointError(
            f"{shown}: {what}; only safetensors are loaded (convert the score model to safetensors)"
        )
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{shown}: not a transformers CLIP model (no config.json)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{shown}/config.json: unreadable ({first_line(exc)})") from None
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise CheckpointError(
            f"{shown}: not a CLIP model (model_type {kind!r}); stages.score.model needs a CLIPModel"
        )
    if not set(files) & {"tokenizer.json", "vocab.json"}:
        raise CheckpointError(f"{shown}: no tokenizer (tokenizer.json or vocab.json + merges.txt)")
    return int(config.get("projection_dim", 512))


def _locate(path: str, revision: str | None) -> tuple[str, Path]:
    if path == TINY_CLIP:
        from .tiny_clip import cached_tiny_clip

        return TINY_CLIP, cached_tiny_clip()
    local = Path(os.path.expanduser(path))
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        if not local.is_dir():
            raise CheckpointError(f"{path}: score model not found (no such directory)")
        return "local model", local.resolve()
    from huggingface_hub import snapshot_download

    try:
        return path, Path(snapshot_download(path, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # the hub raises many types; all mean "cannot get it"
        raise CheckpointError(
            f"{path}: score model not found locally or on the hub ({first_line(exc, limit=None)})"
        ) from None


def check_head(head: Path, dim: int) -> None:
    """Refuse a head that is not a safetensors file of ``weight`` ``[1, dim]`` (and optionally ``bias``
    ``[1]``)."""
    from safetensors import safe_open

    if not head.is_file():
        raise ConfigError(f"stages.score.aesthetic_head: {head}: no such file")
    try:
        with safe_open(str(head), framework="pt") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise ConfigError(
            f"stages.score.aesthetic_head: {head}: not a safetensors file ({first_line(exc)})"
        ) from None
    if shapes.get("weight") != [1, dim] or set(shapes) - {"weight", "bias"} or shapes.get("bias", [1]) != [1]:
        found = ", ".join(f"{name} {shape}" for name, shape in sorted(shapes.items())) or "no tensors"
        raise ConfigError(
            f"stages.score.aesthetic_head: {head}: expected weight [1, {dim}] (and optionally bias [1]) "
            f"over the CLIP image embedding, found {found}"
        )


def resolve_score_model(
    path: str, revision: str | None = None, head: str | None = None, dtype: str = "float32"
) -> ScoreModel:
    """Find and check the score model (and head); one-line errors for a missing or unsafe one."""
    name, folder = _locate(path, revision)
    dim = _check_folder(folder, path if name == TINY_CLIP else str(folder) if name == "local model" else path)
    from .weights import check_clip_weights

    check_clip_weights(folder)  # the file transformers will load, against the model its config builds
    head_path = head_files = None
    if head:
        head_path = Path(os.path.expanduser(head)).resolve()
        check_head(head_path, dim)
        head_files = hashlib.sha256(head_path.read_bytes()).hexdigest()[:32]
    return ScoreModel(name, folder, revision, _hash_folder(folder), dim, head_path, head_files, dtype)
