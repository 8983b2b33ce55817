"""VAE decoding to uint8 pixels at the requested size (diffusers' resolution-binning resize)."""

from __future__ import annotations

import numpy as np

from .. import schema as S
from ..tensors import bytes_to_tensor
from .common import run_groups


class Decoder:
    """Latents (float32 bytes) to ``pixels``: uint8 HWC bytes at the row's ``height`` × ``width``.

    Decoding is ``vae.decode(latents / scaling_factor)``; an image whose requested size
    differs from its bucket is resized and center-cropped with diffusers'
    ``PixArtImageProcessor.resize_and_crop_tensor``; ``postprocess`` then maps to [0, 1]
    and the bytes are ``round(x * 255)``, as diffusers' ``numpy_to_pil`` does.
    """

    def __init__(self, model: str, dtype: str, device: str, latent_channels: int, vae_scale_factor: int) -> None:
        import torch
        from diffusers.image_processor import PixArtImageProcessor

        from ..models import load_component, torch_dtype

        torch.set_grad_enabled(False)
        self.vae = load_component(model, "vae", dtype, device)
        self.processor = PixArtImageProcessor(vae_scale_factor=vae_scale_factor)
        self.dtype = torch_dtype(dtype)
        self.device = device
        self.latent_channels = latent_channels
        self.vae_scale_factor = vae_scale_factor

    def decode(self, latents, height: int, width: int) -> np.ndarray:
        """uint8 ``[B, height, width, 3]`` from latents ``[B, C, h, w]`` of one bucket."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            images = self.vae.decode(latents.to(self.device, self.dtype) / self.vae.config.scaling_factor, return_dict=False)[0]
            images = self.processor.resize_and_crop_tensor(images, width, height)
            if tuple(images.shape[-2:]) != (height, width):  # float rounding in diffusers' resize can lose a pixel
                images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
            array = self.processor.postprocess(images, output_type="np")
        return (array * 255).round().astype(np.uint8)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        def process(sizes, indices: list[int]) -> list[bytes]:
            bucket_h, bucket_w, height, width = sizes
            shape = (self.latent_channels, bucket_h // self.vae_scale_factor, bucket_w // self.vae_scale_factor)
            latents = torch.stack([bytes_to_tensor(batch[S.LATENTS][i], "float32", shape) for i in indices])
            images = self.decode(latents, height, width)
            return [images[position].tobytes() for position in range(len(indices))]

        columns = [batch[c].tolist() for c in (S.BUCKET_HEIGHT, S.BUCKET_WIDTH, S.HEIGHT, S.WIDTH)]
        batch = run_groups(batch, "decode", lambda i: tuple(int(c[i]) for c in columns), process, S.PIXELS)
        del batch[S.LATENTS]
        return batch
