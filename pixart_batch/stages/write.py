"""Image encoding off the GPU actors: uint8 pixels to PNG (default), JPEG or WebP bytes + sha256."""

from __future__ import annotations

import hashlib
import io
from typing import ClassVar

import numpy as np

from .. import schema as S
from .columns import Columns
from .common import group_reads, group_writes, run_groups


class ImageEncoder:
    """Replaces ``pixels`` with ``image_bytes`` and adds ``sha256`` (of the encoded bytes)."""

    reads: ClassVar[Columns] = group_reads(S.PIXELS, S.HEIGHT, S.WIDTH)
    writes: ClassVar[Columns] = group_writes("write", S.IMAGE_BYTES, S.SHA256)
    drops: ClassVar[tuple[str, ...]] = (S.PIXELS,)
    keeps: ClassVar[bool] = True

    def __init__(self, image_format: str, quality: int) -> None:
        self.image_format = image_format
        self.quality = quality

    def encode(self, array: np.ndarray) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        image = Image.fromarray(array)
        if self.image_format == "png":
            image.save(buffer, format="PNG")
        elif self.image_format == "jpeg":
            image.save(buffer, format="JPEG", quality=self.quality)
        else:
            image.save(buffer, format="WEBP", quality=self.quality)
        return buffer.getvalue()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def process(_: None, indices: list[int]) -> list[bytes]:
            encoded = []
            for i in indices:
                shape = (int(batch[S.HEIGHT][i]), int(batch[S.WIDTH][i]), 3)
                encoded.append(self.encode(np.frombuffer(batch[S.PIXELS][i], dtype=np.uint8).reshape(shape)))
            return encoded

        batch = run_groups(batch, "write", lambda i: None, process, S.IMAGE_BYTES)
        del batch[S.PIXELS]
        batch[S.SHA256] = np.array(
            [hashlib.sha256(b).hexdigest() if b else "" for b in batch[S.IMAGE_BYTES]], dtype=object
        )
        return batch
