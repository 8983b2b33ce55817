"""The plan's cost model: GPU seconds per image from the measured figures.

**Seconds per image** come from :data:`~pixart_batch.measured.MEASURED`, numbers this project
measured, or for a card not measured yet from :data:`~pixart_batch.measured.SCALED` (a measured
card's times × a stated factor, labelled "scaled"); the plan prices every kind. An image in bucket
``H × W`` with ``steps`` steps costs::

    dit_s × (steps / ref_steps) × f(N) / f(N_ref)   +   vae_s × (H·W) / (H_ref·W_ref)

``N`` is the DiT's token count ``(H / 16) · (W / 16)`` (VAE factor 8 × patch 2) and ``f(N) =
N · (28·d + 4·N)`` the FLOPs of one transformer block per image up to a constant, *attention
included*: per token 28·d² for the linear layers (self-attention q/k/v/o 8·d², cross-attention q/o
4·d², MLP 16·d², multiply-adds counted twice) and 4·N·d for self-attention's two N×N products,
with ``d = 1152`` (PixArt-XL-2). Cross-attention over ≤ 300 text tokens is left out (< 3 % at
1024²). ``dit_s`` is the measured time per image minus the measured VAE decode time (so it
includes the scheduler and CFG batching overhead); ``vae_s`` scales with pixels (a conv net).
T5 is priced separately at the measured prompts/s (:func:`t5_seconds`), scaled linearly with
``max_sequence_length`` over the measured 120 tokens (an upper bound: the run pads to a batch's
longest caption).

Not modelled: runs without CFG (``guidance_scale`` ≤ 1; none measured: the CFG figure is kept, an
upper bound), other dtypes than the measurement's, multi-GPU overheads, cards with no figure.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..measured import REFERENCE_DIT_WIDTH, figures, gpu_kinds


def check_gpu(gpu: str) -> dict[str, Any]:
    """The figures of GPU kind ``gpu`` (a one-line error naming the known kinds otherwise)."""
    if gpu not in gpu_kinds():
        raise UserError(f"estimate.gpu: unknown GPU kind {gpu!r} (known: {', '.join(gpu_kinds())})")
    return figures(gpu)


def _dit_flops(tokens: int, width: int = REFERENCE_DIT_WIDTH) -> float:
    """One DiT block's FLOPs per image, up to a constant: linear layers plus self-attention."""
    return tokens * (28 * width + 4 * tokens)


def seconds_per_image(gpu: str, height: int, width: int, steps: int) -> float:
    """Estimated GPU seconds for one image of bucket ``height × width`` (see the module docstring)."""
    ref = check_gpu(gpu)
    dit_s = ref["s_per_image"] - ref["vae_s_per_image"]
    tokens, ref_tokens = (height // 16) * (width // 16), (ref["height"] // 16) * (ref["width"] // 16)
    dit = dit_s * steps / ref["steps"] * _dit_flops(tokens) / _dit_flops(ref_tokens)
    vae = ref["vae_s_per_image"] * height * width / (ref["height"] * ref["width"])
    return dit + vae


def t5_seconds(gpu: str, prompts: int, max_sequence_length: int) -> float:
    """Estimated GPU seconds for T5 to encode ``prompts`` prompts at ``max_sequence_length``."""
    ref = figures(gpu)
    return prompts / ref["t5_prompts_per_s"] * max_sequence_length / ref["t5_tokens"]
