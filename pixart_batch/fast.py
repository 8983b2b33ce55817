"""The DiT's exact fast path (``torch.compile``, SDPA backends) and its opt-in fast modes (step
caching, fp8), kept apart from the stage so the stage reads as the diffusers call it is.

Exact mode (the default, and ``stages.denoise.compile``) makes the same images as plain diffusers
within the parity tolerance. The fast modes change images; they are ``image`` settings (the settings
guard, the ``fast_mode`` row column) and ``benchmarks/RESULTS.md`` holds their quality tables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    import torch

    from .config import RunConfig
    from .spec import DenoiseSpec

log = logging.getLogger("pixart_batch")

FP8_MIN_CAPABILITY = (8, 9)
"""float8 matmuls (``torch._scaled_mm``) need Ada (8.9) or Hopper (9.0) and newer."""

PAB_TIMESTEPS = (100, 800)
"""Pyramid Attention Broadcast reuses attention only between these timesteps (diffusers' default)."""

TAYLORSEER_WARMUP_STEPS = 3
"""TaylorSeer runs this many full steps before predicting (diffusers' default)."""


# --------------------------------------------------------------------------- up-front checks


def check_fast_modes(config: RunConfig) -> None:
    """Refuse before Ray starts a fast mode this environment cannot run (one line).

    fp8 needs the DiT on a GPU, torchao, and — where this process sees the GPU — compute capability
    >= 8.9. A driver that sees no GPU (a remote cluster's head) cannot check the capability; the
    DiT actor then checks it itself (:func:`check_fp8_device`)."""
    stage = config.stages.denoise
    if not stage.fp8:
        return
    if stage.num_gpus <= 0:
        raise UserError(
            "stages.denoise.fp8: float8 runs on CUDA GPUs of compute capability >= 8.9 (Ada, Hopper); "
            "set stages.denoise.num_gpus or turn fp8 off"
        )
    if importlib.util.find_spec("torchao") is None:
        raise UserError(
            "stages.denoise.fp8 needs torchao (pip install torchao, or pip install -e '.[lowvram]')"
        )
    import torch

    if torch.cuda.is_available():
        check_fp8_device()


def check_fp8_device() -> None:
    import torch

    if not torch.cuda.is_available():
        raise UserError("stages.denoise.fp8: this DiT actor sees no CUDA GPU")
    capability = torch.cuda.get_device_capability()
    if capability < FP8_MIN_CAPABILITY:
        raise UserError(
            f"stages.denoise.fp8: {torch.cuda.get_device_name()} has compute capability "
            f"{capability[0]}.{capability[1]}; float8 needs >= 8.9 (Ada, Hopper); turn fp8 off"
        )


# --------------------------------------------------------------------------- torch.compile


def inductor_cache_dir() -> str:
    """Point inductor's cache at the project cache (unless the user set ``TORCHINDUCTOR_CACHE_DIR``)
    and turn its FX graph cache on, so a restarted actor finds the compiled code of earlier ones."""
    from .tiny import default_cache_dir

    directory = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default_cache_dir() / "inductor"))
    os.makedirs(directory, exist_ok=True)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return directory


def compiler_missing(device: str) -> str | None:
    """Why inductor cannot compile on ``device`` here (None when it can)."""
    if device == "cuda":
        return None if importlib.util.find_spec("triton") is not None else "triton is not installed"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    return None if compiler else "no C++ compiler (g++, c++, clang++ or $CXX) on this machine"


def compile_transformer(transformer: torch.nn.Module, device: str) -> bool:
    """``torch.compile`` the transformer in place (inductor, static shapes). False (and one log
    line) where inductor cannot work here: the stage then runs eager, the same images."""
    import torch

    missing = compiler_missing(device)
    if missing is not None:
        log.warning("stages.denoise.compile: %s; the DiT runs without torch.compile (same images)", missing)
        return False
    cache = inductor_cache_dir()
    dynamo_config: Any = torch._dynamo.config
    # One compiled graph per bucket: a run may use every aspect bucket (PixArt has ~40).
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))
    transformer.compile(dynamic=False)
    log.info("stages.denoise.compile: the DiT is compiled per bucket (inductor cache %s)", cache)
    return True


# --------------------------------------------------------------------------- attention kernels


@contextlib.contextmanager
def sdpa_backends(device: str) -> Iterator[None]:
    """On CUDA, the fastest SDPA kernel that accepts each call: flash attention for the unmasked
    self-attention (fp16/bf16), memory-efficient or cuDNN attention for the masked cross-attention,
    math last. A no-op on the CPU."""
    if device != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.MATH,
    ]
    with sdpa_kernel(order, set_priority=True):
        yield


# --------------------------------------------------------------------------- fast modes


def quantize_fp8(transformer: torch.nn.Module) -> None:
    """torchao float8 dynamic-activation + float8 weight quantization of the linear layers (per row).

    Untested on hardware in this project's CPU sessions: it needs compute capability >= 8.9."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    check_fp8_device()
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))


class StepCache:
    """Diffusers' own step-cache hooks on a PixArt transformer, one pipeline call at a time.

    ``PixArtTransformer2DModel`` is not a ``CacheMixin`` (it has no ``enable_cache``) and the PixArt
    pipelines set no cache context, so this does what ``CacheMixin`` does: the ``diffusers.hooks``
    ``apply_*`` functions add the hooks (``BasicTransformerBlock`` is registered for them), and
    :meth:`call` wraps one pipeline call in a cache context and resets every stateful hook afterwards,
    so no state leaks from one batch (or bucket) into the next. With CFG the pipeline runs both
    branches in one batch: one context.
    """

    def __init__(self, transformer: torch.nn.Module, spec: DenoiseSpec) -> None:
        from diffusers.hooks import (
            FirstBlockCacheConfig,
            HookRegistry,
            PyramidAttentionBroadcastConfig,
            TaylorSeerCacheConfig,
            apply_first_block_cache,
            apply_pyramid_attention_broadcast,
            apply_taylorseer_cache,
        )

        self.transformer = transformer
        self.timestep = 1000
        if spec.step_cache == "first-block":
            apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=spec.step_cache_threshold))
        elif spec.step_cache == "pab":
            config = PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=spec.step_cache_interval,
                cross_attention_block_skip_range=spec.step_cache_interval,
                spatial_attention_timestep_skip_range=PAB_TIMESTEPS,
                cross_attention_timestep_skip_range=PAB_TIMESTEPS,
                current_timestep_callback=lambda: self.timestep,
            )
            # PixArt's pipeline has no ``current_timestep``: read it from the transformer's input.
            transformer.register_forward_pre_hook(self._record_timestep, with_kwargs=True)
            apply_pyramid_attention_broadcast(transformer, config)
        elif spec.step_cache == "taylorseer":
            import torch

            apply_taylorseer_cache(
                transformer,
                TaylorSeerCacheConfig(
                    cache_interval=spec.step_cache_interval,
                    disable_cache_before_step=TAYLORSEER_WARMUP_STEPS,
                    taylor_factors_dtype=torch.float32,
                    # diffusers' default patterns (``...attn``) miss PixArt's ``attn1``/``attn2``: name them,
                    # with the feed-forward, the three parts of a BasicTransformerBlock that carry compute.
                    cache_identifiers=[r"transformer_blocks\.\d+\.(attn1|attn2|ff)"],
                ),
            )
        else:
            raise ValueError(f"unknown step cache {spec.step_cache!r}")
        # As CacheMixin.enable_cache does after applying hooks: later cache contexts must reach them.
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()

    def _record_timestep(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        timestep = kwargs.get("timestep")
        if timestep is not None:
            self.timestep = int(timestep.flatten()[0])  # PixArt schedulers step on integer timesteps

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        from diffusers.hooks import HookRegistry
        from diffusers.models.cache_utils import CacheMixin

        try:
            with CacheMixin.cache_context(self.transformer, "denoise"):  # type: ignore[arg-type]
                yield
        finally:
            HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks()


def step_cache_for(
    transformer: torch.nn.Module, spec: DenoiseSpec
) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A context manager factory wrapping one pipeline call: the step cache's, or a no-op in exact mode."""
    if spec.step_cache == "none":
        return contextlib.nullcontext
    return StepCache(transformer, spec).call
