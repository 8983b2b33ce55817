"""DiT and VAE in one actor: one actor per GPU, so fractional GPU shares can never mis-pack.

Separate DiT (0.6 GPU) and VAE (0.4 GPU) pools rely on Ray packing the fractions the right
way round; Ray packs greedily, so VAE actors created first can take two slots of one card
and leave a DiT actor nowhere to start. With ``stages.decode.colocate`` each actor asks for
whole GPUs (``stages.denoise.num_gpus``) and holds both models.

The VAE of one batch overlaps the DiT of the next: the actor runs two batches at once
(Ray's ``max_concurrency: 2`` on GPU), each model guarded by its own lock, so while one
thread decodes batch N the other denoises batch N+1; on CUDA the VAE runs on its own
stream. No model is ever used by two threads at once.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np

from .. import schema as S
from ..batches import take
from ..spec import DecodeSpec, DenoiseSpec
from .columns import Columns, chained
from .decode import Decoder
from .denoise import Denoiser

DENOISE_DECODE = chained(Denoiser, Decoder)
"""The columns of the DiT then the VAE on one batch."""


class DenoiseDecode:
    """Denoiser then Decoder on one batch; decodes in chunks of ``decode_batch_size`` rows. Its columns
    are the two stages' chained (:func:`~.columns.chained`): it runs in their place."""

    reads: ClassVar[Columns] = DENOISE_DECODE.reads
    writes: ClassVar[Columns] = DENOISE_DECODE.writes
    drops: ClassVar[tuple[str, ...]] = DENOISE_DECODE.drops
    keeps: ClassVar[bool] = True

    def __init__(self, denoise: DenoiseSpec, decode: DecodeSpec, decode_batch_size: int) -> None:
        self.denoiser = Denoiser(denoise)
        self.decoder = Decoder(decode)
        self.decode_batch_size = decode_batch_size
        self._dit_lock, self._vae_lock = threading.Lock(), threading.Lock()
        self._vae_stream: Any = None
        if decode.device.startswith("cuda"):
            import torch

            self._vae_stream = torch.cuda.Stream()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._dit_lock:
            batch = self.denoiser(batch)
        with self._vae_lock:
            stream: Any = nullcontext()
            if self._vae_stream is not None:
                import torch

                self._vae_stream.wait_stream(torch.cuda.current_stream())
                stream = torch.cuda.stream(self._vae_stream)
            with stream:
                size = len(batch[S.KEY])
                parts = [
                    self.decoder(take(batch, slice(i, i + self.decode_batch_size)))
                    for i in range(0, size, self.decode_batch_size)
                ]
            if self._vae_stream is not None:
                self._vae_stream.synchronize()
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
