"""Aspect buckets: requested sizes mapped to diffusers' aspect-ratio bins.

The table follows the transformer's ``sample_size`` exactly as diffusers' PixArt
pipelines choose it (128 → 1024 bins, 64 → 512, 32 → 256, 256 → 2048).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, UserError, first_line
from .parsing import DuplicateKeyError, loads_json


@dataclass(frozen=True)
class ModelGeometry:
    sample_size: int
    """Transformer latent side (128 for PixArt-XL-2-1024)."""
    vae_scale_factor: int
    """Pixels per latent (8 for the SD VAE)."""
    latent_channels: int
    """Channels of the latents the DiT denoises (4)."""
    text_dim: int
    """T5 hidden size (``d_model``: 4096 for T5-XXL), the width of a stored embedding."""

    @property
    def native_size(self) -> int:
        return self.sample_size * self.vae_scale_factor


def aspect_ratio_table(sample_size: int) -> dict[str, list[float]]:
    """diffusers' bin table (keys are height/width as strings, values ``[height, width]``)."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN,
        ASPECT_RATIO_512_BIN,
        ASPECT_RATIO_1024_BIN,
    )
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

    tables = {
        32: ASPECT_RATIO_256_BIN,
        64: ASPECT_RATIO_512_BIN,
        128: ASPECT_RATIO_1024_BIN,
        256: ASPECT_RATIO_2048_BIN,
    }
    if sample_size not in tables:
        raise UserError(
            f"transformer sample_size {sample_size} has no aspect-ratio table (known: 32, 64, 128, 256)"
        )
    return tables[sample_size]


def bucket_for(height: float, width: float, table: dict[str, list[float]]) -> tuple[int, int]:
    """``(bucket_height, bucket_width)`` for a requested size or ratio, by diffusers' own rule."""
    from diffusers.image_processor import PixArtImageProcessor

    return PixArtImageProcessor.classify_height_width_bin(height, width, ratios=table)


def read_model_geometry(model_dir: str | Path, folders: dict[str, Path] | None = None) -> ModelGeometry:
    """Read ``sample_size``, the VAE scale and T5's width from a checkpoint's component configs.

    ``folders`` maps ``transformer`` / ``vae`` / ``text_encoder`` to their folders when they are not all
    under ``model_dir`` (components supplied by ``model.components_from``).
    """
    root = Path(model_dir)
    where = {name: (folders or {}).get(name, root / name) for name in ("transformer", "vae", "text_encoder")}
    configs = {name: _read_config(root, folder / "config.json") for name, folder in where.items()}
    transformer, vae, text_encoder = configs["transformer"], configs["vae"], configs["text_encoder"]
    blocks = vae.get("block_out_channels", [0, 0, 0, 0])
    if not isinstance(blocks, list) or not blocks:
        raise CheckpointError(
            f"{where['vae'] / 'config.json'}: 'block_out_channels' is {json.dumps(blocks)}, expected a list"
        )
    geometry = ModelGeometry(
        sample_size=_positive(transformer, "sample_size", where["transformer"]),
        vae_scale_factor=2 ** (len(blocks) - 1),
        latent_channels=_positive(transformer, "in_channels", where["transformer"], default=4),
        text_dim=_positive(text_encoder, "d_model", where["text_encoder"]),
    )
    # Components that must agree (model.components_from can pair any two checkpoints).
    pairs = [
        ("transformer", "caption_channels", geometry.text_dim, "text_encoder", "d_model"),
        (
            "transformer",
            "in_channels",
            _positive(vae, "latent_channels", where["vae"], default=4),
            "vae",
            "latent_channels",
        ),
    ]
    for name, key, other, other_name, other_key in pairs:
        value = configs[name].get(key, other)
        if value != other:
            raise CheckpointError(
                f"{where[name] / 'config.json'}: '{key}' is {json.dumps(value)} but the {other_name}'s "
                f"'{other_key}' is {other} ({where[other_name] / 'config.json'}); "
                "these components do not fit together"
            )
    return geometry


def _read_config(root: Path, path: Path) -> dict:
    """A component's ``config.json`` (a key given twice is refused, naming the file and line)."""
    try:
        data = loads_json(path.read_text())
    except DuplicateKeyError as exc:
        raise CheckpointError(exc.describe(str(path))) from None
    except FileNotFoundError:
        raise CheckpointError(f"{root}: not a PixArt checkpoint (missing {path})") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint config ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found a JSON {type(data).__name__}")
    return data


def _positive(config: dict, key: str, folder: Path, default: int | None = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        found = "missing" if value is None else f"{json.dumps(value)}"
        raise CheckpointError(f"{folder / 'config.json'}: '{key}' is {found}, expected a positive integer")
    return value
