"""What ``pixart-batch plan`` needs to know about the published PixArt checkpoints: data only.

Read from each hub repository's ``model_index.json``, ``transformer/config.json``,
``vae/config.json``, ``text_encoder/config.json`` and ``scheduler/scheduler_config.json``
(2026-12). The planner uses a row when the hub cannot be reached (``HF_HUB_OFFLINE`` or no
network) and the checkpoint is not in the local cache; when the hub answers, its configs are
read and compared with the row (the hub's win, and the plan says so in one line).

A row per checkpoint a shipped recipe (``configs/``) names, plus the other published ones;
``components_from`` recipes take the text encoder and VAE facts from the ``components_from`` row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_XL2 = {"dit_width": 1152, "dit_layers": 28, "text_dim": 4096, "vae_scale_factor": 8}
"""Shared by every PixArt-XL-2 release: 16 heads × 72, 28 blocks; T5-XXL ``d_model`` 4096; a VAE with
four ``block_out_channels`` (scale factor 2**3)."""

ALPHA = {"pipeline_class": "PixArtAlphaPipeline", "max_sequence_length": 120}
SIGMA = {"pipeline_class": "PixArtSigmaPipeline", "max_sequence_length": 300}

PUBLISHED: dict[str, dict[str, Any]] = {
    "PixArt-alpha/PixArt-XL-2-1024-MS": {
        **_XL2,
        **ALPHA,
        "sample_size": 128,
        "scheduler": "DPMSolverMultistepScheduler",
    },
    "PixArt-alpha/PixArt-XL-2-512x512": {
        **_XL2,
        **ALPHA,
        "sample_size": 64,
        "scheduler": "DPMSolverMultistepScheduler",
    },
    "PixArt-alpha/PixArt-LCM-XL-2-1024-MS": {
        **_XL2,
        **ALPHA,
        "sample_size": 128,
        "scheduler": "LCMScheduler",
    },
    "PixArt-alpha/PixArt-Alpha-DMD-XL-2-512x512": {
        **_XL2,
        **ALPHA,
        "sample_size": 64,
        "scheduler": "DDPMScheduler",
    },
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": {
        **_XL2,
        **SIGMA,
        "sample_size": 128,
        "scheduler": "DPMSolverMultistepScheduler",
    },
    "PixArt-alpha/PixArt-Sigma-XL-2-2K-MS": {
        **_XL2,
        **SIGMA,
        "sample_size": 256,
        "scheduler": "DPMSolverMultistepScheduler",
    },
    "PixArt-alpha/PixArt-Sigma-XL-2-512-MS": {
        **_XL2,
        **SIGMA,
        "sample_size": 64,
        "scheduler": "DPMSolverMultistepScheduler",
    },
}
"""Hub id → ``sample_size`` (the transformer's latent side: 64 / 128 / 256 for 512² / 1024² / 2048²),
``vae_scale_factor``, ``text_dim`` (T5 ``d_model``), ``dit_width`` / ``dit_layers``, ``pipeline_class``
(the family), ``max_sequence_length`` (the family's T5 token limit) and the ``scheduler`` class it ships."""

COMPARED = ("sample_size", "vae_scale_factor", "text_dim", "dit_width", "dit_layers", "pipeline_class")
"""The fields checked against the hub's configs when it answers."""


def shipped_facts(path: str, components_from: str | None = None) -> dict[str, Any] | None:
    """The shipped row of checkpoint ``path`` (text encoder and VAE facts from ``components_from``'s
    row when given), or None when either is not a published hub id or names a local directory."""
    names = [path] + ([components_from] if components_from else [])
    if any(name not in PUBLISHED or Path(name).expanduser().exists() for name in names):
        return None
    base = PUBLISHED[names[-1]]
    return {**PUBLISHED[path], "vae_scale_factor": base["vae_scale_factor"], "text_dim": base["text_dim"]}
