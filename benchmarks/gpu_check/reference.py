"""Plain diffusers on precomputed embeddings, and the pixel comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gpu_check.common import Row
from gpu_check.context import Context


def load_diffusers(ctx: Context, checkpoint: Path, pipeline_class: str = "PixArtAlphaPipeline"):
    import diffusers

    pipe = (
        getattr(diffusers, pipeline_class)
        .from_pretrained(str(checkpoint), torch_dtype=ctx.dit_dtype)
        .to(ctx.device)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(
    ctx: Context,
    pipe,
    rows: list[Row],
    pad_to: int | None,
    output_type: str = "np",
    max_sequence_length: int | None = None,
):
    """Plain diffusers on precomputed embeddings, rows of one bucket, one CPU generator per image.

    ``pad_to=None`` pads like the stages (zeros, to the longest prompt/negative of the call);
    ``pad_to=120`` pads like diffusers' own ``encode_prompt`` (T5 gives non-zero vectors at padded
    positions: random values here, masked out by the attention mask).
    """
    d_model = rows[0].embedding.shape[1]
    length = pad_to or max(max(r.embedding.shape[0], r.negative.shape[0]) for r in rows)
    generator = torch.Generator("cpu").manual_seed(1234)

    def padded(tensors: list[torch.Tensor]):
        embeds = torch.zeros(len(tensors), length, d_model)
        if pad_to is not None:
            embeds = torch.randn(len(tensors), length, d_model, generator=generator) * 0.2
        mask = torch.zeros(len(tensors), length, dtype=torch.long)
        for i, tensor in enumerate(tensors):
            embeds[i, : tensor.shape[0]] = tensor.float()
            mask[i, : tensor.shape[0]] = 1
        # the embedding dtype's values, then the DiT dtype (what the stages do with stored embeddings)
        return embeds.to(ctx.embedding_dtype).to(ctx.dit_dtype).to(ctx.device), mask.to(ctx.device)

    prompt_embeds, prompt_mask = padded([r.embedding for r in rows])
    negative_embeds, negative_mask = padded([r.negative for r in rows])
    extra = {} if max_sequence_length is None else {"max_sequence_length": max_sequence_length}
    with torch.inference_mode():
        images = pipe(
            prompt=None,
            negative_prompt=None,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_mask,
            negative_prompt_embeds=negative_embeds,
            negative_prompt_attention_mask=negative_mask,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in rows],
            num_inference_steps=ctx.spec.steps,
            guidance_scale=ctx.spec.guidance,
            height=rows[0].height,
            width=rows[0].width,
            use_resolution_binning=False,
            output_type=output_type,
            **extra,
        ).images
    if output_type != "np":
        return images
    nans = int(np.isnan(images).sum())
    if nans:
        print(f"  warning: diffusers returned {nans} NaN pixel values", flush=True)
    return [(image * 255).round().astype(np.uint8) for image in images]


def groups_of(rows: list[Row]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row.height, row.width), []).append(i)
    return groups


def compare(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    diff = np.concatenate(
        [np.abs(x.astype(np.int16) - y.astype(np.int16)).ravel() for x, y in zip(a, b, strict=True)]
    )
    return {
        "max_abs": int(diff.max()),
        "mean_abs": round(float(diff.mean()), 4),
        "pass": bool(diff.max() <= 2),
    }
