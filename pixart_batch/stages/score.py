"""Quality scores on the decoded pixels, before they are encoded: CLIP image–text similarity against
the row's caption, and an optional linear aesthetic head over the CLIP image embedding.

What is scored is exactly what is stored: the uint8 pixels the writer encodes (PNG is lossless; for
JPEG / WebP the pixels are encoded and decoded first, the same deterministic encoding the writer
runs), through ``CLIPProcessor`` as a user scoring the stored image would call it. ``clip_score`` is
``100 × cosine(image_embeds, text_embeds)`` (not clamped at 0); captions longer than CLIP's context
are truncated by the processor.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import schema as S
from ..spec import ScoreSpec
from .columns import Columns
from .common import group_reads, group_writes, run_groups

if TYPE_CHECKING:
    from PIL import Image as PILImage


def load_head(path: str) -> tuple[Any, Any]:
    """The aesthetic head's ``weight`` [1, D] and ``bias`` [1] (zero when absent), float32."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(path)
    weight = tensors["weight"].to(torch.float32)
    return weight, tensors.get("bias", torch.zeros(1)).to(torch.float32)


class Scorer:
    """Adds ``clip_score`` (and ``aesthetic_score`` with a head) to a batch that still has ``pixels``."""

    reads: ClassVar[Columns] = group_reads(S.PIXELS, S.HEIGHT, S.WIDTH, S.CAPTION)
    writes: ClassVar[Columns] = group_writes("score", S.CLIP_SCORE, aesthetic_head=(S.AESTHETIC_SCORE,))
    drops: ClassVar[tuple[str, ...]] = ()
    keeps: ClassVar[bool] = True

    def __init__(self, spec: ScoreSpec) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as hf_logging

        from ..models import torch_dtype

        torch.set_grad_enabled(False)
        self.spec = spec
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the image processor's backend notice, the weight-loading bar
        hf_logging.disable_progress_bar()
        try:
            revision: Any = {"revision": spec.revision} if spec.revision else {}
            self.model = CLIPModel.from_pretrained(
                spec.model_dir, use_safetensors=True, dtype=torch_dtype(spec.dtype), **revision
            )
            self.processor = CLIPProcessor.from_pretrained(spec.model_dir, **revision)
        finally:
            hf_logging.set_verbosity(verbosity)
        self.model.to(spec.device).eval()  # type: ignore[arg-type]  # transformers types .to by its decorator
        self.head = load_head(spec.head) if spec.head else None

    def stored_image(self, pixels: bytes, height: int, width: int) -> PILImage.Image:
        """The image as it will be stored (and read back by a user)."""
        from PIL import Image

        image = Image.fromarray(np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3))
        if self.spec.image_format == "png":
            return image
        from .write import ImageEncoder

        encoded = ImageEncoder(self.spec.image_format, self.spec.image_quality).encode(np.asarray(image))
        return Image.open(io.BytesIO(encoded)).convert("RGB")

    def score(self, images: list[PILImage.Image], captions: list[str]) -> list[tuple[float, float]]:
        """``(clip_score, aesthetic_score)`` per image (aesthetic NaN without a head)."""
        import torch

        out: list[tuple[float, float]] = []
        max_length = self.processor.tokenizer.model_max_length
        for start in range(0, len(images), self.spec.batch_size):
            inputs = self.processor(
                text=captions[start : start + self.spec.batch_size],
                images=images[start : start + self.spec.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            )
            inputs = inputs.to(self.spec.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.inference_mode():
                result = self.model(**inputs)
            image_embeds = result.image_embeds.to(torch.float32)
            text_embeds = result.text_embeds.to(torch.float32)
            clip = (100.0 * (image_embeds * text_embeds).sum(dim=-1)).cpu()
            if self.head is not None:
                weight, bias = self.head
                aesthetic = (image_embeds.cpu() @ weight.T + bias).squeeze(-1)
            else:
                aesthetic = torch.full_like(clip, float("nan"))
            out.extend(zip(clip.tolist(), aesthetic.tolist(), strict=True))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def process(_: None, indices: list[int]) -> list[tuple[float, float]]:
            images = [
                self.stored_image(batch[S.PIXELS][i], int(batch[S.HEIGHT][i]), int(batch[S.WIDTH][i]))
                for i in indices
            ]
            return self.score(images, [str(batch[S.CAPTION][i]) for i in indices])

        batch = run_groups(batch, "score", lambda i: None, process, "_scores")
        scores = batch.pop("_scores")
        nan = (float("nan"), float("nan"))
        pairs = [value if isinstance(value, tuple) else nan for value in scores]
        batch[S.CLIP_SCORE] = np.array([p[0] for p in pairs], dtype=np.float32)
        if self.head is not None:
            batch[S.AESTHETIC_SCORE] = np.array([p[1] for p in pairs], dtype=np.float32)
        return batch
