"""DiT denoising: diffusers' own PixArt pipeline (the checkpoint's family), fed stored embeddings,
one bucket per call."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import schema as S
from ..spec import DenoiseSpec
from ..tensors import bytes_to_tensor, tensor_to_bytes
from .columns import Columns
from .common import group_reads, group_writes, run_groups

if TYPE_CHECKING:
    import torch


class Denoiser:
    """Turns embeddings + seeds into final latents (column ``latents``, float32 bytes).

    Each call of the diffusers pipeline (``PixArtAlphaPipeline`` or ``PixArtSigmaPipeline``, as the
    checkpoint declares) gets rows of one aspect bucket only, a list of
    ``torch.Generator("cpu").manual_seed(seed)`` (one per image, so an image does not depend on
    its batch), and the embeddings re-padded to the longest in that call (masked positions get a
    -10000 attention bias, so padding values do not matter). With guidance <= 1 the negative
    branch is not run (as in diffusers) and no negative embeddings are needed.

    Adds ``scheduler``: the class of the scheduler that actually ran.

    ``compile`` (exact mode): the transformer is ``torch.compile``-d and every call of a bucket gets
    the same shapes — text padded to ``max_sequence_length``, the batch padded to ``batch_size`` with
    copies of its last row (their outputs dropped) — so a bucket compiles once. ``step_cache`` and
    ``fp8`` are the opt-in fast modes (:mod:`pixart_batch.fast`).

    Reads the negative columns whether CFG is on or not (without it they are the empty placeholders
    the store lookup attaches); drops the embeddings once the latents are made.
    """

    reads: ClassVar[Columns] = group_reads(
        S.NUM_TOKENS,
        S.NEGATIVE_NUM_TOKENS,
        S.PROMPT_EMBEDDING,
        S.NEGATIVE_EMBEDDING,
        S.SEED,
        S.BUCKET_HEIGHT,
        S.BUCKET_WIDTH,
    )
    writes: ClassVar[Columns] = group_writes("denoise", S.LATENTS, S.SCHEDULER)
    drops: ClassVar[tuple[str, ...]] = (S.PROMPT_EMBEDDING, S.NEGATIVE_EMBEDDING)
    keeps: ClassVar[bool] = True

    def __init__(self, spec: DenoiseSpec) -> None:
        import diffusers
        import torch

        from ..models import load_component, load_scheduler, torch_dtype

        torch.set_grad_enabled(False)
        self.spec = spec
        pipeline_cls = getattr(diffusers, spec.pipeline_class)
        from ..fast import compile_transformer, quantize_fp8, step_cache_for

        transformer = load_component(spec.model, "transformer", spec.dtype, spec.device)
        if spec.fp8:
            quantize_fp8(transformer)
        self.step_cache = step_cache_for(transformer, spec)
        self.compiled = spec.compile and compile_transformer(transformer, spec.device)
        self.pipeline = pipeline_cls(
            tokenizer=None,
            text_encoder=None,
            vae=None,
            transformer=transformer,
            scheduler=load_scheduler(spec.model, spec.scheduler),
        )
        self.pipeline.vae_scale_factor = spec.vae_scale_factor
        self.pipeline.set_progress_bar_config(disable=True)
        self.scheduler_name = type(self.pipeline.scheduler).__name__
        self.dtype = torch_dtype(spec.dtype)

    def _padded(
        self, blobs: list[bytes], counts: list[int], length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        embeds = torch.zeros(len(blobs), length, self.spec.text_dim, dtype=self.dtype)
        mask = torch.zeros(len(blobs), length, dtype=torch.long)
        for row, (blob, count) in enumerate(zip(blobs, counts, strict=True)):
            embeds[row, :count] = bytes_to_tensor(
                blob, self.spec.embedding_dtype, (count, self.spec.text_dim)
            ).to(self.dtype)
            mask[row, :count] = 1
        return embeds.to(self.spec.device), mask.to(self.spec.device)

    def denoise(self, rows: dict[str, list], height: int, width: int) -> torch.Tensor:
        """Latents ``[B, C, h, w]`` for rows of one bucket (lists per column)."""
        import torch

        if not self.compiled:
            return self._denoise(rows, height, width)
        size, fixed = len(rows[S.SEED]), self.spec.batch_size
        parts = []
        for start in range(0, size, fixed):  # a group larger than the batch size: calls of that size
            part = {column: list(values[start : start + fixed]) for column, values in rows.items()}
            real = len(part[S.SEED])
            for values in part.values():  # padding rows: copies of the last row, outputs dropped
                values.extend([values[-1]] * (fixed - real))
            parts.append(self._denoise(part, height, width)[:real])
        return torch.cat(parts)

    def _denoise(self, rows: dict[str, list], height: int, width: int) -> torch.Tensor:
        import torch

        from ..fast import sdpa_backends

        spec = self.spec
        counts = [int(n) for n in rows[S.NUM_TOKENS]]
        negative_counts = [int(n) for n in rows[S.NEGATIVE_NUM_TOKENS]] if spec.cfg else []
        # Masked positions get a -10000 bias: any length >= the longest gives the same images; a
        # compiled DiT gets one fixed length, so its shapes do not change from call to call.
        length = max(counts + negative_counts + ([spec.max_sequence_length] if self.compiled else []))
        prompt_embeds, prompt_mask = self._padded(rows[S.PROMPT_EMBEDDING], counts, length)
        negative_embeds = negative_mask = None
        if spec.cfg:
            negative_embeds, negative_mask = self._padded(rows[S.NEGATIVE_EMBEDDING], negative_counts, length)
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in rows[S.SEED]]
        with self.step_cache(), sdpa_backends(spec.device):
            return self.pipeline(
                prompt=None,
                prompt_embeds=prompt_embeds,
                prompt_attention_mask=prompt_mask,
                negative_prompt=None,
                negative_prompt_embeds=negative_embeds,
                negative_prompt_attention_mask=negative_mask,
                generator=generators,
                num_inference_steps=spec.num_inference_steps,
                timesteps=list(spec.timesteps) if spec.timesteps else None,
                guidance_scale=spec.guidance_scale,
                height=height,
                width=width,
                use_resolution_binning=False,
                output_type="latent",
            ).images

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = (S.NUM_TOKENS, S.NEGATIVE_NUM_TOKENS, S.PROMPT_EMBEDDING, S.NEGATIVE_EMBEDDING, S.SEED)

        def process(bucket: tuple[int, int], indices: list[int]) -> list[bytes]:
            rows = {column: [batch[column][i] for i in indices] for column in columns}
            out = self.denoise(rows, *bucket).float()
            return [tensor_to_bytes(out[position]) for position in range(len(indices))]

        heights, widths = batch[S.BUCKET_HEIGHT].tolist(), batch[S.BUCKET_WIDTH].tolist()
        batch = run_groups(batch, "denoise", lambda i: (int(heights[i]), int(widths[i])), process, S.LATENTS)
        batch[S.SCHEDULER] = np.array([self.scheduler_name] * len(heights), dtype=object)
        for column in (S.PROMPT_EMBEDDING, S.NEGATIVE_EMBEDDING):
            del batch[column]
        return batch
