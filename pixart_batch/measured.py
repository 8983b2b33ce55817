"""Measured and documented figures the estimate (``pixart-batch plan``) prices runs with: data only.

Add a row to :data:`MEASURED` per new measurement; a card not measured yet may have a row in
:data:`SCALED` (a measured card's figures times a stated factor, labelled "scaled" wherever shown).
:func:`gpu_kinds` is what ``estimate.gpu`` accepts (``config.EstimateConfig`` reads it from here).
"""

from __future__ import annotations

from typing import Any

MEASURED: dict[str, dict[str, Any]] = {
    "h200": {
        "card": "NVIDIA H200",
        "width": 1024,
        "height": 1024,
        "steps": 20,
        "cfg": True,
        "dtype": "float16",
        "batch_size": 8,
        "s_per_image": 0.8485,
        "vae_s_per_image": 0.0726,
        "t5_prompts_per_s": 322.0,
        "t5_tokens": 120,
        "source": (
            "benchmarks/RESULTS.md, GPU check 2026-11-26 (random PixArt-XL-2 weights): pixart_batch "
            "Denoiser + Decoder stages 0.8485 s/image (plain diffusers loop 0.8461; the design estimate "
            "0.80-0.84), VAE decode 0.0726 s/image at batch 8, T5-XXL bf16 322 prompts/s padded to 120 tokens"
        ),
    },
}
"""Measured seconds per image by GPU kind (PixArt-XL-2, one card); add a row per new measurement."""

SCALED: dict[str, dict[str, Any]] = {
    "h100": {
        "card": "NVIDIA H100 SXM",
        "from": "h200",
        "factor": 1.10,
        "why": (
            "not measured: the H200's figures × 1.10 (the same GH100 compute, 989 dense fp16 TFLOPS, "
            "with 3.35 instead of 4.8 TB/s of memory bandwidth); an assumption until an H100 is measured"
        ),
    },
}
"""GPU kinds priced from a measured kind's figures: times × ``factor`` (T5 prompts/s ÷ ``factor``)."""

REFERENCE_DIT_WIDTH = 1152
"""PixArt-XL-2's hidden size (16 heads × 72), the ``d`` of the scaling rule."""

REFERENCE_DIT_LAYERS = 28
"""PixArt-XL-2's transformer blocks (the measured DiT)."""

BYTES_PER_PIXEL = {"png": 1.8, "jpeg": 0.45, "webp": 0.3}
"""Assumed bytes per output pixel for 8-bit RGB photographic content: PNG (lossless) about 1.8
(≈1.9 MB per 1024² image), JPEG and WebP at the default quality 95 about 0.45 and 0.3. Constants,
not measurements: real sizes vary with content by ±50 %."""

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
"""Bytes per element of each weights / embedding dtype (``config.DTYPES`` is this table's keys)."""


def gpu_kinds() -> list[str]:
    """The GPU kinds with a measured or scaled figure (the allowed ``estimate.gpu`` values)."""
    return sorted({*MEASURED, *SCALED})


def figures(kind: str) -> dict[str, Any]:
    """The figures of ``kind`` (a :data:`MEASURED` row, or a :data:`SCALED` one worked out), with
    ``basis`` ``measured`` or ``scaled``."""
    if kind in MEASURED:
        return {**MEASURED[kind], "basis": "measured"}
    scaled = SCALED[kind]
    base, factor = MEASURED[scaled["from"]], scaled["factor"]
    return {
        **base,
        "card": scaled["card"],
        "s_per_image": base["s_per_image"] * factor,
        "vae_s_per_image": base["vae_s_per_image"] * factor,
        "t5_prompts_per_s": base["t5_prompts_per_s"] / factor,
        "basis": "scaled",
        "source": f"{scaled['why']} (the {scaled['from']} row)",
    }
