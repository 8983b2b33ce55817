"""VAE decoding to uint8 pixels at the requested size (diffusers' resolution-binning resize)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import schema as S
from ..spec import DecodeSpec
from ..tensors import bytes_to_tensor
from .columns import Columns
from .common import group_reads, group_writes, run_groups

if TYPE_CHECKING:
    import torch


def diffusers_resize_is_whole(bucket_h: int, bucket_w: int, height: int, width: int) -> bool:
    """Whether diffusers' ``resize_and_crop_tensor`` returns ``height`` × ``width`` for a bucket image.

    It resizes to ``int(side * ratio)`` and centre-crops; for some sizes float rounding makes a
    resized side one pixel short (``int(208 * (30 / 208)) == 29``), and the crop, starting at -1,
    then returns a strip one pixel high (30×43 from a 208×304 bucket comes back 1×43).
    """
    ratio = max(height / bucket_h, width / bucket_w)
    return int(bucket_h * ratio) >= height and int(bucket_w * ratio) >= width


def resize_back(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Images ``[B, C, h, w]`` of one bucket to ``height`` × ``width``, as diffusers' resolution binning does.

    Exactly diffusers' ``PixArtImageProcessor.resize_and_crop_tensor`` wherever that returns the
    requested size (:func:`diffusers_resize_is_whole`; a test holds the pixels equal to diffusers'
    pipeline). Where it would not, the one step diffusers gets wrong is corrected: the resized side
    that float rounding made one pixel short is rounded up to the requested side, then the same
    bilinear resize and centre crop apply.
    """
    import torch.nn.functional as F
    from diffusers.image_processor import PixArtImageProcessor

    bucket_h, bucket_w = images.shape[-2:]
    if diffusers_resize_is_whole(bucket_h, bucket_w, height, width):
        return PixArtImageProcessor.resize_and_crop_tensor(images, width, height)
    ratio = max(height / bucket_h, width / bucket_w)
    resized_h, resized_w = max(int(bucket_h * ratio), height), max(int(bucket_w * ratio), width)
    images = F.interpolate(images, size=(resized_h, resized_w), mode="bilinear", align_corners=False)
    top, left = (resized_h - height) // 2, (resized_w - width) // 2
    return images[:, :, top : top + height, left : left + width]


class Decoder:
    """Latents (float32 bytes) to ``pixels``: uint8 HWC bytes at the row's ``height`` × ``width``.

    Decoding is ``vae.decode(latents / scaling_factor)``; an image whose requested size
    differs from its bucket is resized and center-cropped by :func:`resize_back` (diffusers'
    ``resize_and_crop_tensor``, the step a diffusers pipeline runs with ``use_resolution_binning=True``);
    ``postprocess`` then maps to [0, 1] and the bytes are ``round(x * 255)``, as diffusers'
    ``numpy_to_pil`` does.
    """

    reads: ClassVar[Columns] = group_reads(S.LATENTS, S.BUCKET_HEIGHT, S.BUCKET_WIDTH, S.HEIGHT, S.WIDTH)
    writes: ClassVar[Columns] = group_writes("decode", S.PIXELS)
    drops: ClassVar[tuple[str, ...]] = (S.LATENTS,)
    keeps: ClassVar[bool] = True

    def __init__(self, spec: DecodeSpec) -> None:
        import torch
        from diffusers.image_processor import PixArtImageProcessor

        from ..models import load_component, torch_dtype

        torch.set_grad_enabled(False)
        self.spec = spec
        self.vae = load_component(spec.model, "vae", spec.dtype, spec.device)
        if spec.vae_tiling:
            self.vae.enable_tiling()
        if spec.vae_slicing:
            self.vae.enable_slicing()
        # channels_last: cuDNN's faster NHWC convolutions (the same pixels within the parity tolerance).
        self.memory_format = torch.channels_last if spec.device == "cuda" else torch.contiguous_format
        self.vae.to(memory_format=self.memory_format)
        self.processor = PixArtImageProcessor(vae_scale_factor=spec.vae_scale_factor)
        self.dtype = torch_dtype(spec.dtype)

    def decode(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        """uint8 ``[B, height, width, 3]`` from latents ``[B, C, h, w]`` of one bucket."""
        import torch

        with torch.inference_mode():
            latents = latents.to(self.spec.device, self.dtype).to(memory_format=self.memory_format)
            images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            images = resize_back(images, height, width)
            array = self.processor.postprocess(images, output_type="np")
        if array.shape[1:3] != (height, width):  # never silently: the row becomes a failure naming it
            raise RuntimeError(
                f"decoded image is {array.shape[1]}x{array.shape[2]}, expected {height}x{width}"
            )
        return (array * 255).round().astype(np.uint8)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        spec = self.spec

        def process(sizes: tuple[int, ...], indices: list[int]) -> list[bytes]:
            bucket_h, bucket_w, height, width = sizes
            shape = (
                spec.latent_channels,
                bucket_h // spec.vae_scale_factor,
                bucket_w // spec.vae_scale_factor,
            )
            latents = torch.stack([bytes_to_tensor(batch[S.LATENTS][i], "float32", shape) for i in indices])
            images = self.decode(latents, height, width)
            return [images[position].tobytes() for position in range(len(indices))]

        columns = [batch[c].tolist() for c in (S.BUCKET_HEIGHT, S.BUCKET_WIDTH, S.HEIGHT, S.WIDTH)]
        batch = run_groups(batch, "decode", lambda i: tuple(int(c[i]) for c in columns), process, S.PIXELS)
        del batch[S.LATENTS]
        return batch
