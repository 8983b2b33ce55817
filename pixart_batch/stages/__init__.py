"""Pipeline stages: plain classes (``__init__`` loads, ``__call__(batch) -> batch``), no Ray inside.

Batches are dicts of equal-length numpy arrays (Ray Data's ``numpy`` batch format).
"""

from __future__ import annotations

from ..registry import Registry

STAGES: Registry[type] = Registry(
    "stage",
    {
        "encode": "pixart_batch.stages.encode:TextEncoder",
        "denoise": "pixart_batch.stages.denoise:Denoiser",
        "decode": "pixart_batch.stages.decode:Decoder",
        "generate": "pixart_batch.stages.generate:DenoiseDecode",
        "score": "pixart_batch.stages.score:Scorer",
    },
)
"""The model stages by name; imported only when asked for (they import torch)."""


def stage_class(name: str) -> type:
    """The stage class called ``name`` (a key of :data:`STAGES`); an unknown name raises."""
    return STAGES.load(name)
