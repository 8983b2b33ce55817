"""Lossless tensor <-> bytes for the embedding store and the latents between stages.

Raw little-endian bytes in the tensor's own dtype (bfloat16 travels as its 16-bit
pattern), so a stored embedding is exactly tokens × d_model × dtype size bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    """Bytes of a CPU-contiguous copy of ``tensor`` in its dtype."""
    import torch

    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().tobytes()
    return tensor.numpy().tobytes()


def bytes_to_tensor(data: bytes, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`tensor_to_bytes`."""
    import torch

    if dtype == "bfloat16":
        array = np.frombuffer(data, dtype=np.int16).reshape(shape)
        return torch.from_numpy(array.copy()).view(torch.bfloat16)
    array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    return torch.from_numpy(array.copy())
