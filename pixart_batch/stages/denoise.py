"""DiT denoising: diffusers' own PixArt pipeline, fed stored embeddings, one bucket per call."""

from __future__ import annotations

import numpy as np

from .. import schema as S
from ..tensors import bytes_to_tensor, tensor_to_bytes
from .common import run_groups


class Denoiser:
    """Turns embeddings + seeds into final latents (column ``latents``, float32 bytes).

    Each call of the diffusers pipeline gets rows of one aspect bucket only, a list of
    ``torch.Generator("cpu").manual_seed(seed)`` (one per image, so an image does not
    depend on its batch), and the embeddings re-padded to the longest in that call
    (masked positions get a -10000 attention bias, so padding values do not matter).
    """

    def __init__(
        self,
        model: str,
        dtype: str,
        device: str,
        embedding_dtype: str,
        d_model: int,
        vae_scale_factor: int,
        num_inference_steps: int,
        guidance_scale: float,
    ) -> None:
        import torch
        from diffusers import PixArtAlphaPipeline

        from ..models import load_component, torch_dtype

        torch.set_grad_enabled(False)
        self.pipeline = PixArtAlphaPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=None,
            transformer=load_component(model, "transformer", dtype, device),
            scheduler=load_component(model, "scheduler", dtype, device),
        )
        self.pipeline.vae_scale_factor = vae_scale_factor
        self.pipeline.set_progress_bar_config(disable=True)
        self.dtype = torch_dtype(dtype)
        self.device = device
        self.embedding_dtype = embedding_dtype
        self.d_model = d_model
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale

    def _padded(self, blobs: list[bytes], counts: list[int], length: int):
        import torch

        embeds = torch.zeros(len(blobs), length, self.d_model, dtype=self.dtype)
        mask = torch.zeros(len(blobs), length, dtype=torch.long)
        for row, (blob, count) in enumerate(zip(blobs, counts)):
            embeds[row, :count] = bytes_to_tensor(blob, self.embedding_dtype, (count, self.d_model)).to(self.dtype)
            mask[row, :count] = 1
        return embeds.to(self.device), mask.to(self.device)

    def denoise(self, rows: dict[str, list], height: int, width: int):
        """Latents ``[B, C, h, w]`` for rows of one bucket (lists per column)."""
        import torch

        cfg = self.guidance_scale > 1.0
        counts = [int(n) for n in rows[S.NUM_TOKENS]]
        negative_counts = [int(n) for n in rows[S.NEGATIVE_NUM_TOKENS]] if cfg else []
        length = max(counts + negative_counts)
        prompt_embeds, prompt_mask = self._padded(rows[S.PROMPT_EMBEDDING], counts, length)
        negative_embeds = negative_mask = None
        if cfg:
            negative_embeds, negative_mask = self._padded(rows[S.NEGATIVE_EMBEDDING], negative_counts, length)
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in rows[S.SEED]]
        return self.pipeline(
            prompt=None,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_mask,
            negative_prompt=None,
            negative_prompt_embeds=negative_embeds,
            negative_prompt_attention_mask=negative_mask,
            generator=generators,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            height=height,
            width=width,
            use_resolution_binning=False,
            output_type="latent",
        ).images

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = (S.NUM_TOKENS, S.NEGATIVE_NUM_TOKENS, S.PROMPT_EMBEDDING, S.NEGATIVE_EMBEDDING, S.SEED)

        def process(bucket, indices: list[int]) -> list[bytes]:
            rows = {column: [batch[column][i] for i in indices] for column in columns}
            out = self.denoise(rows, *bucket).float()
            return [tensor_to_bytes(out[position]) for position in range(len(indices))]

        heights, widths = batch[S.BUCKET_HEIGHT].tolist(), batch[S.BUCKET_WIDTH].tolist()
        batch = run_groups(batch, "denoise", lambda i: (int(heights[i]), int(widths[i])), process, S.LATENTS)
        for column in (S.PROMPT_EMBEDDING, S.NEGATIVE_EMBEDDING):
            del batch[column]
        return batch
