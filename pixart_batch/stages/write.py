"""Image encoding off the GPU actors: uint8 pixels to PNG (default), JPEG or WebP bytes + sha256."""

from __future__ import annotations

import hashlib
import io
import time

import numpy as np

from .. import schema as S


class ImageEncoder:
    """Replaces ``pixels`` with ``image_bytes`` and adds ``sha256`` (of the encoded bytes)."""

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
        start = time.perf_counter()
        encoded = []
        for blob, height, width in zip(batch[S.PIXELS], batch[S.HEIGHT], batch[S.WIDTH]):
            array = np.frombuffer(blob, dtype=np.uint8).reshape(int(height), int(width), 3)
            encoded.append(self.encode(array))
        del batch[S.PIXELS]
        batch["image_bytes"] = np.array(encoded, dtype=object)
        batch[S.SHA256] = np.array([hashlib.sha256(b).hexdigest() for b in encoded], dtype=object)
        batch["_busy_write_s"] = np.full(len(encoded), (time.perf_counter() - start) / max(len(encoded), 1))
        return batch
