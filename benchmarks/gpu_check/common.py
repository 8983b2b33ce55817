"""Shared pieces: the import path, a row to generate, dtype names, timing and memory helpers."""

from __future__ import annotations

import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # pixart_batch importable without installing it (PYTHONPATH=$PWD on the device)
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Row:
    """One image to generate: its noise seed, bucket size and (valid-token-only) embeddings."""

    seed: int
    height: int
    width: int
    embedding: torch.Tensor
    """``[num_tokens, d_model]`` in the encoder dtype, on the CPU (what the embedding store holds)."""
    negative: torch.Tensor
    """``[negative_num_tokens, d_model]``: the empty negative prompt (1 valid token)."""


# =============================================================================================
# ADAPTER: every call into pixart_batch lives in this block. Written against the working tree of
# 2026-11-26 (the spec refactor): stages.denoise.Denoiser(spec.DenoiseSpec),
# stages.decode.Decoder(spec.DecodeSpec), models.ModelSource of models.Component built from
# families.declared_classes, numpy batch dicts with the column names of pixart_batch.schema,
# tensors.tensor_to_bytes, tiny.build_tiny_checkpoint and the CLI
# (generate / verify, OUTPUT/run_report.json). When that API changes, fix only this block.
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    """``(result, seconds)`` of ``fn()`` with the GPU synchronised on both sides."""
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - start


def median_time(fn, warmup: int = 1, reps: int = 3) -> float:
    for _ in range(warmup):
        fn()
    return sorted(timed(fn)[1] for _ in range(reps))[reps // 2]


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None


def allocated_gb() -> float | None:
    return round(torch.cuda.memory_allocated() / 1e9, 3) if torch.cuda.is_available() else None


def reserved_gb() -> float | None:
    return round(torch.cuda.memory_reserved() / 1e9, 3) if torch.cuda.is_available() else None


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def seeded_init_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with small seeded random values, on the module's device.

    diffusers zero-initialises output projections (a random DiT would predict zeros, every image
    would look alike and parity would be trivial). Norm weights 1, biases N(0, 0.02), other
    weights N(0, 1)/sqrt(fan_in). Deterministic for a given seed, device and torch version.
    """
    device = next(module.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if "norm" in name and name.endswith("weight") and param.ndim == 1:
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator, device=device) * 0.02)
            else:
                fan_in = param.shape[1:].numel() if param.ndim > 1 else param.numel()
                param.copy_(
                    torch.randn(param.shape, generator=generator, device=device) / max(fan_in, 1) ** 0.5
                )
