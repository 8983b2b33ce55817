"""GPU check: pixart_batch at the real PixArt-XL-2 sizes, random weights, one card.

Builds random (seeded, non-degenerate) PixArt-XL-2 components at the real sizes directly on
the GPU, saves 1024 and 512 checkpoints in the diffusers layout under a scratch folder, then:

  env         GPU, versions, date
  build       the 1024 / 512 checkpoints (transformer + VAE + scheduler, fp16 safetensors)
  parity      plain diffusers ``PixArtAlphaPipeline`` vs pixart_batch's Denoiser + Decoder stages,
              4 rows per size (one non-square bucket), varied prompt lengths, CFG 4.5, 20 steps;
              plus batch invariance of the stages (batch 1 vs batch 4)
  throughput  1024², 20 steps, CFG, fp16, 16 images after 2 warm-up images:
              (a) a plain diffusers loop fed precomputed embeddings (batch 8, output "pil")
              (b) the Denoiser + Decoder stages (batch 8)
  t5          T5-XXL encoder, bf16, 64 prompts padded to 120 vs 32 tokens
  dit_step    one DiT step with CFG (both branches), bf16 eager, per image
  vae         VAE decode at 1024², fp16, per image
  sigma       PixArt-Σ-XL-2-1024 (random): its own checkpoint (no micro-conditions, SDXL-style VAE
              config), plain diffusers ``PixArtSigmaPipeline`` vs the stages, 4 rows incl. a
              non-square bucket, prompt lengths up to 300 tokens, max_sequence_length 300
  lowvram     the low-VRAM recipe's pieces, peak memory per phase: T5-XXL bf16 vs torchao
              weight-only int8 (memory, deviation), what is left on the GPU once the encoder is
              deleted, VAE decode at 1024² / 2048² untiled vs tiled, batch 4 with and without slicing
  e2e         ``python -m pixart_batch generate`` + ``verify`` on the 1024 checkpoint (needs ray,
              datasets and polars; skipped with a note where they are not installed)

Each section is isolated: a failure prints its traceback and the next section runs. Results are
rewritten after every section to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (a section ready
to paste into benchmarks/RESULTS.md), so a timeout still leaves the numbers measured so far.

    bash benchmarks/gpu_check.sh                                  # on the GPU machine
    python benchmarks/gpu_check.py --small --out /tmp/gco         # CPU smoke test, tiny sizes

Every call into pixart_batch is in the ADAPTER block below: when the stages' API changes, only
that block needs fixing.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import inspect
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
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
# =============================================================================================

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


class PixartBatchStages:
    """pixart_batch's DiT and VAE stages (no Ray), called the way its Ray pipeline calls them."""

    def __init__(
        self,
        model_dir: Path,
        dtype: torch.dtype,
        device: str,
        embedding_dtype: torch.dtype,
        d_model: int,
        latent_channels: int,
        vae_scale_factor: int,
        steps: int,
        guidance: float,
    ) -> None:
        from pixart_batch import schema
        from pixart_batch.families import declared_classes
        from pixart_batch.models import Component, ModelSource
        from pixart_batch.spec import DecodeSpec, DenoiseSpec
        from pixart_batch.stages.decode import Decoder
        from pixart_batch.stages.denoise import Denoiser

        self.schema = schema
        self.embedding_dtype = embedding_dtype
        index = json.loads((model_dir / "model_index.json").read_text())
        # These checkpoints have no text encoder (the stages here need transformer, VAE, scheduler).
        source = ModelSource(
            str(model_dir),
            tuple(
                Component(name, library, cls, str(model_dir))
                for name, (library, cls) in declared_classes(index, str(model_dir)).items()
            ),
        )
        self.denoiser = Denoiser(
            DenoiseSpec(
                model=source,
                pipeline_class=index["_class_name"],
                dtype=_DTYPE_NAMES[dtype],
                device=device,
                scheduler="checkpoint",
                num_inference_steps=steps,
                guidance_scale=guidance,
                timesteps=None,
                embedding_dtype=_DTYPE_NAMES[embedding_dtype],
                text_dim=d_model,
                vae_scale_factor=vae_scale_factor,
            )
        )
        self.decoder = Decoder(
            DecodeSpec(
                model=source,
                dtype=_DTYPE_NAMES[dtype],
                device=device,
                latent_channels=latent_channels,
                vae_scale_factor=vae_scale_factor,
                vae_tiling=False,
                vae_slicing=False,
            )
        )

    def __call__(self, rows: list[Row], batch_size: int) -> list[np.ndarray]:
        """uint8 ``[H, W, 3]`` per row; ``batch_size`` rows per stage call (mixed buckets allowed)."""
        from pixart_batch.tensors import tensor_to_bytes

        def ints(values):
            return np.array(values, dtype=np.int64)

        def objects(values):  # element by element: bytes / str cells, never a 2-D array
            array = np.empty(len(values), dtype=object)
            for i, value in enumerate(values):
                array[i] = value
            return array

        S = self.schema
        images: list[np.ndarray] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]

            batch = {
                S.KEY: objects([f"row-{start + i:05d}" for i in range(len(chunk))]),
                S.ERROR: objects([""] * len(chunk)),
                S.SEED: ints([r.seed for r in chunk]),
                S.NUM_TOKENS: ints([r.embedding.shape[0] for r in chunk]),
                S.NEGATIVE_NUM_TOKENS: ints([r.negative.shape[0] for r in chunk]),
                S.PROMPT_EMBEDDING: objects([tensor_to_bytes(r.embedding.to(self.embedding_dtype)) for r in chunk]),
                S.NEGATIVE_EMBEDDING: objects([tensor_to_bytes(r.negative.to(self.embedding_dtype)) for r in chunk]),
                S.BUCKET_HEIGHT: ints([r.height for r in chunk]),
                S.BUCKET_WIDTH: ints([r.width for r in chunk]),
                S.HEIGHT: ints([r.height for r in chunk]),  # requested size = bucket: no resize back
                S.WIDTH: ints([r.width for r in chunk]),
            }
            batch = self.decoder(self.denoiser(batch))
            errors = [e for e in batch[S.ERROR].tolist() if e]
            if errors:  # the stages record failures per row instead of raising
                raise RuntimeError(f"{len(errors)} row(s) failed in the stages; first: {errors[0]}")
            for i in range(len(chunk)):
                shape = (int(batch[S.HEIGHT][i]), int(batch[S.WIDTH][i]), 3)
                images.append(np.frombuffer(batch[S.PIXELS][i], dtype=np.uint8).reshape(shape))
        return images

    def pipeline_class_name(self) -> str:
        """The diffusers pipeline class the Denoiser drives (the checkpoint's ``_class_name``)."""
        return type(self.denoiser.pipeline).__name__


def family_of_checkpoint(model_dir: Path) -> dict:
    """pixart_batch's family for a checkpoint: its name and T5 token limit."""
    from pixart_batch.families import family_of

    family = family_of(json.loads((model_dir / "model_index.json").read_text()), str(model_dir))
    return {"name": family.name, "pipeline_class": family.pipeline_class, "max_sequence_length": family.max_sequence_length}


def quantize_text_encoder_int8(model, dtype: torch.dtype, device: str, max_sequence_length: int):
    """``(encoder, how)``: ``model`` (a T5 encoder in ``dtype`` on the CPU, as load_text_encoder loads
    it for int8) with its linear weights torchao weight-only int8 on ``device``.

    Runs pixart_batch's own ``stages.encode.load_text_encoder`` with ``quantization="int8"``, its
    ``models.load_component`` (which reads the checkpoint's ``text_encoder/`` folder: saving T5-XXL
    to disk is too slow here) swapped for one that returns ``model``. Should that API have changed,
    it falls back to the same call load_text_encoder makes, ``quantize_(model, Int8WeightOnlyConfig())``,
    and says so in ``how``.
    """
    try:
        from pixart_batch import models
        from pixart_batch.models import Component, ModelSource
        from pixart_batch.spec import EncodeSpec
        from pixart_batch.stages.encode import load_text_encoder

        source = ModelSource("in-memory", (Component("text_encoder", "transformers", "T5EncoderModel", "in-memory"),))
        spec = EncodeSpec(
            model=source, dtype=_DTYPE_NAMES[dtype], device=device, max_sequence_length=max_sequence_length, quantization="int8"
        )
    except Exception as exc:  # noqa: BLE001 - the adapter is out of date: quantize the way it would
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig(), device=device)
        return model.to(
            device
        ), f"quantize_(model, Int8WeightOnlyConfig(), device=...) directly (adapter: {type(exc).__name__}: {exc})"[:300]
    original = models.load_component
    models.load_component = lambda *args, **kwargs: model
    try:
        encoder = load_text_encoder(spec)
    finally:
        models.load_component = original
    return encoder, (
        f"pixart_batch.stages.encode.load_text_encoder(quantization='int8') on the in-memory "
        f"{_DTYPE_NAMES[dtype]} module (its load_component swapped for one returning that module: "
        "T5-XXL is not saved to disk)"
    )


def tiny_tokenizer(workdir: Path) -> tuple[Path, dict]:
    """A locally built T5 tokenizer folder (from pixart_batch's tiny checkpoint) and the
    ``model_index.json`` entries for ``tokenizer`` and ``text_encoder``."""
    from pixart_batch.tiny import build_tiny_checkpoint

    tiny = build_tiny_checkpoint(workdir / "tiny-checkpoint")
    index = json.loads((tiny / "model_index.json").read_text())
    return tiny / "tokenizer", {key: index[key] for key in ("tokenizer", "text_encoder")}


def e2e_commands(config: str, model: Path, prompts: Path, output: Path, steps: int | None) -> tuple[list[str], list[str]]:
    """The CLI commands of the end-to-end run: ``generate`` and ``verify``."""
    generate = [
        sys.executable,
        "-m",
        "pixart_batch",
        "generate",
        "--config",
        config,
        "--model",
        str(model),
        "--prompts",
        str(prompts),
        "--output",
        str(output),
    ]
    if steps is not None:
        generate += ["--steps", str(steps)]
    return generate, [sys.executable, "-m", "pixart_batch", "verify", str(output)]


def e2e_report(output: Path) -> dict:
    """The numbers of ``OUTPUT/run_report.json`` this check reports."""
    report = json.loads((output / "run_report.json").read_text())
    keys = ("images_generated", "images_failed", "images_per_second", "embeddings_encoded", "stage_seconds")
    return {key: report.get(key) for key in keys}


E2E_CONFIG_GPU = "configs/one-gpu.yaml"
E2E_CONFIG_CPU = "configs/tiny.yaml"
E2E_MODULES = ("ray", "datasets", "polars")  # what pixart_batch's Ray pipeline imports beyond the stages

# ================================== end of the adapter =======================================


# Real configurations (the hub checkpoints' config.json). Keys a diffusers version does not accept
# are dropped (and listed) when the module is built, as from_pretrained does.
TRANSFORMER_XL2 = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    cross_attention_dim=1152,
    patch_size=2,
    caption_channels=4096,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    attention_bias=True,
    dropout=0.0,
    upcast_attention=False,
    use_linear_projection=False,
    only_cross_attention=False,
    double_self_attention=False,
)
VAE_SD = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
)
SCHEDULER = dict(
    algorithm_type="dpmsolver++",
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    solver_order=2,
    solver_type="midpoint",
    lower_order_final=True,
    timestep_spacing="linspace",
)


def sigma_transformer_config(transformer: dict) -> dict:
    """PixArt-Σ-XL-2-1024-MS's transformer: α's, without the micro-conditions (resolution, aspect ratio)."""
    return dict(transformer, use_additional_conditions=False)


def sigma_vae_config(vae: dict) -> dict:
    """The SDXL VAE PixArt-Σ ships: SD's architecture, scaling 0.13025, 1024-pixel tiles, force_upcast."""
    return dict(vae, scaling_factor=0.13025, force_upcast=True, sample_size=2 * vae["sample_size"])


@dataclass(frozen=True)
class Spec:
    """Everything that --small shrinks."""

    transformer: dict
    vae: dict
    t5: dict
    sizes: dict
    """label -> (transformer sample_size, the parity rows' buckets (height, width))."""
    e2e_t5: dict
    """The text encoder of the end-to-end checkpoint (d_model = the DiT's caption_channels)."""
    steps: int = 20
    guidance: float = 4.5
    max_tokens: int = 120
    prompt_lengths: tuple = (7, 33, 20, 120)
    throughput_images: int = 16
    warmup_images: int = 2
    batch_size: int = 8
    t5_batch: int = 64
    t5_lengths: tuple = (120, 32)
    component_batches: tuple = (1, 4, 8)
    e2e_timeout_s: int = 180
    sigma_max_tokens: int = 300
    sigma_prompt_lengths: tuple = (7, 33, 20, 300)
    lowvram_t5_prompts: int = 32
    lowvram_vae_latents: tuple = (128, 256)
    """Latent sides of the tiled / untiled decodes (1024² and 2048²); the first also for slicing."""
    lowvram_slicing_batch: int = 4


FULL = Spec(
    transformer=TRANSFORMER_XL2,
    vae=VAE_SD,
    t5=T5_XXL,
    sizes={
        "1024": (128, [(1024, 1024), (1024, 1024), (768, 1344), (768, 1344)]),
        "512": (64, [(512, 512), (512, 512), (384, 672), (384, 672)]),
    },
    e2e_t5=dict(T5_XXL, num_layers=2, num_heads=8, d_kv=64, d_ff=1024),
)
SMALL = Spec(
    transformer=dict(
        TRANSFORMER_XL2, num_attention_heads=2, attention_head_dim=32, num_layers=2, cross_attention_dim=64, caption_channels=64
    ),
    vae=dict(VAE_SD, block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=256),
    t5=dict(T5_XXL, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    sizes={
        "256": (32, [(256, 256), (256, 256), (192, 336), (192, 336)]),
        "128": (16, [(128, 128), (128, 128), (96, 160), (96, 160)]),
    },
    e2e_t5=dict(T5_XXL, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    steps=2,
    throughput_images=2,
    warmup_images=1,
    batch_size=2,
    t5_batch=8,
    component_batches=(1, 2),
    e2e_timeout_s=600,
    lowvram_vae_latents=(48, 96),  # larger than the small VAE's 32-latent tile, so tiling does tile
)

# The design's H200 numbers (docs/design.md), for the comparison column.
DESIGN = {
    "pipe_s_per_image": "0.80–0.84",
    "dit_step_bf16_s_per_image": "0.034",
    "vae_decode_s_per_image": "0.07–0.08",
    "t5_prompts_per_s_120": "327",
    "t5_prompts_per_s_32": "1237",
}


# ------------------------------------------------------------------ helpers


class Context:
    """Run-wide settings and the results dict (written out after every section)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.small = args.small
        self.spec = SMALL if args.small else FULL
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        half = self.cuda
        self.dit_dtype = torch.float16 if half else torch.float32  # parity, throughput (the pipeline's fp16 recipe)
        self.embedding_dtype = torch.bfloat16 if half else torch.float32  # the encoder's dtype in configs/one-gpu.yaml
        self.t5_dtype = torch.bfloat16 if half else torch.float32
        self.dit_step_dtype = torch.bfloat16 if half else torch.float32
        self.vae_dtype = torch.float16 if half else torch.float32
        self.out = Path(args.out)
        self.workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check-", dir="/tmp"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.command = os.environ.get("GPU_CHECK_COMMAND") or "python3 benchmarks/gpu_check.py " + " ".join(sys.argv[1:])
        self.results: dict = {"meta": {}, "sections": {}}

    def checkpoint(self, label: str) -> Path:
        return self.workdir / f"pixart-xl2-{label}"

    @property
    def big(self) -> str:
        """The label of the large size (1024, or 256 with --small)."""
        return next(iter(self.spec.sizes))

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self))


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
                param.copy_(torch.randn(param.shape, generator=generator, device=device) / max(fan_in, 1) ** 0.5)


def accepted(cls, config: dict) -> dict:
    """The keys of ``config`` that ``cls.__init__`` takes (the hub configs carry a few legacy ones)."""
    parameters = inspect.signature(cls.__init__).parameters
    return {key: value for key, value in config.items() if key in parameters}


def build_transformer(ctx: Context, sample_size: int, dtype: torch.dtype, seed: int, config: dict | None = None):
    """A random PixArt-XL-2 transformer built on the device (fp32 init, then cast)."""
    from diffusers import PixArtTransformer2DModel

    with torch.device(ctx.device):
        config = dict(config or ctx.spec.transformer, sample_size=sample_size)
        model = PixArtTransformer2DModel(**accepted(PixArtTransformer2DModel, config))
    seeded_init_(model, seed)
    return model.to(ctx.device, dtype).eval()  # .to(device) too: buffers made from numpy stay on the CPU otherwise


def build_vae(ctx: Context, dtype: torch.dtype, seed: int, config: dict | None = None):
    from diffusers import AutoencoderKL

    with torch.device(ctx.device):
        model = AutoencoderKL(**accepted(AutoencoderKL, config or ctx.spec.vae))
    seeded_init_(model, seed)
    return model.to(ctx.device, dtype).eval()


def build_t5(ctx: Context, config: dict, dtype: torch.dtype, seed: int):
    from transformers import T5Config, T5EncoderModel

    t5_config = T5Config(**config)
    assert t5_config.dense_act_fn == "gelu_new" and t5_config.is_gated_act, "T5 v1.1 uses gated gelu_new"
    with torch.device(ctx.device):
        model = T5EncoderModel(t5_config)
    seeded_init_(model, seed)
    return model.to(ctx.device, dtype).eval()


def vae_scale_factor(ctx: Context) -> int:
    return 2 ** (len(ctx.spec.vae["block_out_channels"]) - 1)


def make_rows(ctx: Context, buckets: list[tuple[int, int]], lengths: list[int], seeds: list[int], seed: int) -> list[Row]:
    """Rows with random embeddings (T5-like scale) of the given valid lengths; one shared empty negative."""
    generator = torch.Generator("cpu").manual_seed(seed)
    d_model = ctx.spec.transformer["caption_channels"]
    negative = (torch.randn(1, d_model, generator=generator) * 0.2).to(ctx.embedding_dtype)
    return [
        Row(
            seed=s,
            height=h,
            width=w,
            negative=negative,
            embedding=(torch.randn(n, d_model, generator=generator) * 0.2).to(ctx.embedding_dtype),
        )
        for (h, w), n, s in zip(buckets, lengths, seeds, strict=True)
    ]


def load_diffusers(ctx: Context, checkpoint: Path, pipeline_class: str = "PixArtAlphaPipeline"):
    import diffusers

    pipe = getattr(diffusers, pipeline_class).from_pretrained(str(checkpoint), torch_dtype=ctx.dit_dtype).to(ctx.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(
    ctx: Context, pipe, rows: list[Row], pad_to: int | None, output_type: str = "np", max_sequence_length: int | None = None
):
    """Plain diffusers on precomputed embeddings, rows of one bucket, one CPU generator per image.

    ``pad_to=None`` pads like the stages (zeros, to the longest prompt/negative of the call);
    ``pad_to=120`` pads like diffusers' own ``encode_prompt`` (T5 gives non-zero vectors at padded
    positions: random values here, masked out by the attention mask).
    """
    d_model = rows[0].embedding.shape[1]
    length = pad_to or max(max(r.embedding.shape[0], r.negative.shape[0]) for r in rows)
    generator = torch.Generator("cpu").manual_seed(1234)

    def padded(tensors: list[torch.Tensor]):
        embeds = torch.zeros(len(tensors), length, d_model)
        if pad_to is not None:
            embeds = torch.randn(len(tensors), length, d_model, generator=generator) * 0.2
        mask = torch.zeros(len(tensors), length, dtype=torch.long)
        for i, tensor in enumerate(tensors):
            embeds[i, : tensor.shape[0]] = tensor.float()
            mask[i, : tensor.shape[0]] = 1
        # the embedding dtype's values, then the DiT dtype (what the stages do with stored embeddings)
        return embeds.to(ctx.embedding_dtype).to(ctx.dit_dtype).to(ctx.device), mask.to(ctx.device)

    prompt_embeds, prompt_mask = padded([r.embedding for r in rows])
    negative_embeds, negative_mask = padded([r.negative for r in rows])
    extra = {} if max_sequence_length is None else {"max_sequence_length": max_sequence_length}
    with torch.inference_mode():
        images = pipe(
            prompt=None,
            negative_prompt=None,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_mask,
            negative_prompt_embeds=negative_embeds,
            negative_prompt_attention_mask=negative_mask,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in rows],
            num_inference_steps=ctx.spec.steps,
            guidance_scale=ctx.spec.guidance,
            height=rows[0].height,
            width=rows[0].width,
            use_resolution_binning=False,
            output_type=output_type,
            **extra,
        ).images
    if output_type != "np":
        return images
    nans = int(np.isnan(images).sum())
    if nans:
        print(f"  warning: diffusers returned {nans} NaN pixel values", flush=True)
    return [(image * 255).round().astype(np.uint8) for image in images]


def groups_of(rows: list[Row]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row.height, row.width), []).append(i)
    return groups


def compare(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    diff = np.concatenate([np.abs(x.astype(np.int16) - y.astype(np.int16)).ravel() for x, y in zip(a, b, strict=True)])
    return {"max_abs": int(diff.max()), "mean_abs": round(float(diff.mean()), 4), "pass": bool(diff.max() <= 2)}


# ------------------------------------------------------------------ sections

SECTIONS: list[tuple[str, object]] = []


def section(name: str):
    def register(fn):
        SECTIONS.append((name, fn))
        return fn

    return register


def _installed_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@section("env")
def env_section(ctx: Context) -> None:
    import diffusers
    import transformers

    meta = ctx.results["meta"]
    meta.update(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=ctx.command,
        small=ctx.small,
        device=ctx.device,
        card=torch.cuda.get_device_name(0) if ctx.cuda else f"CPU ({os.cpu_count()} cores)",
        gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1) if ctx.cuda else None,
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        diffusers=diffusers.__version__,
        transformers=transformers.__version__,
        torchao=_installed_version("torchao"),
        dtypes={name: _DTYPE_NAMES[getattr(ctx, f"{name}_dtype")] for name in ("dit", "embedding", "t5", "dit_step", "vae")},
        workdir=str(ctx.workdir),
    )
    for key, value in meta.items():
        print(f"  {key}: {value}", flush=True)


@section("build")
def build_section(ctx: Context) -> None:
    """The 1024 and 512 checkpoints: transformer + VAE + scheduler (no text encoder, no tokenizer)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    dropped = sorted(set(ctx.spec.transformer) - set(accepted(PixArtTransformer2DModel, ctx.spec.transformer)))
    if dropped:
        print(f"  transformer config keys this diffusers does not take (ignored, as from_pretrained does): {dropped}")
    info = ctx.results.setdefault("build", {})
    vae, seconds = timed(lambda: build_vae(ctx, ctx.dit_dtype, seed=1))
    info["vae_build_s"] = round(seconds, 2)
    info["vae_params_M"] = round(sum(p.numel() for p in vae.parameters()) / 1e6, 1)
    for index, (label, (sample_size, _)) in enumerate(ctx.spec.sizes.items()):
        transformer, seconds = timed(
            lambda size=sample_size, seed=10 + index: build_transformer(ctx, size, ctx.dit_dtype, seed=seed)
        )
        info[f"transformer_{label}_build_s"] = round(seconds, 2)
        info["transformer_params_M"] = round(sum(p.numel() for p in transformer.parameters()) / 1e6, 1)
        pipe = PixArtAlphaPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=vae,
            transformer=transformer,
            scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
        )
        target = ctx.checkpoint(label)
        shutil.rmtree(target, ignore_errors=True)
        _, seconds = timed(lambda pipe=pipe, target=target: pipe.save_pretrained(target, safe_serialization=True))
        size_mb = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 1e6
        info[f"checkpoint_{label}_save_s"] = round(seconds, 2)
        info[f"checkpoint_{label}_MB"] = round(size_mb, 1)
        print(
            f"  {target}: {size_mb:.0f} MB ({info['transformer_params_M']} M transformer params, built in "
            f"{info[f'transformer_{label}_build_s']} s, saved in {seconds:.1f} s)",
            flush=True,
        )
        del pipe, transformer
        free_memory()
    del vae
    free_memory()


def parity_for(ctx: Context, label: str) -> dict:
    spec = ctx.spec
    _, buckets = spec.sizes[label]
    offset = 100 * list(spec.sizes).index(label)
    rows = make_rows(
        ctx, buckets, list(spec.prompt_lengths), seeds=[offset + 11, offset + 22, offset + 33, offset + 44], seed=offset + 7
    )
    return parity_check(ctx, ctx.checkpoint(label), rows, spec.max_tokens, "PixArtAlphaPipeline", label)


def parity_check(
    ctx: Context,
    checkpoint: Path,
    rows: list[Row],
    max_tokens: int,
    pipeline_class: str,
    label: str,
    max_sequence_length: int | None = None,
) -> dict:
    """Plain diffusers (``pipeline_class``) vs the stages on ``rows``: the four comparisons of parity_rows()."""
    spec = ctx.spec
    groups = groups_of(rows)

    def per_group(fn) -> list[np.ndarray]:
        images: list[np.ndarray | None] = [None] * len(rows)
        for indices in groups.values():
            for i, image in zip(indices, fn([rows[i] for i in indices]), strict=True):
                images[i] = image
        return images  # type: ignore[return-value]

    pipe = load_diffusers(ctx, checkpoint, pipeline_class)
    kwargs = {"max_sequence_length": max_sequence_length}
    same_inputs = per_group(lambda group, pipe=pipe: run_diffusers(ctx, pipe, group, pad_to=None, **kwargs))
    padded = per_group(lambda group, pipe=pipe: run_diffusers(ctx, pipe, group, pad_to=max_tokens, **kwargs))
    single = [run_diffusers(ctx, pipe, [row], pad_to=max_tokens, **kwargs)[0] for row in rows]
    diffusers_class = type(pipe).__name__
    del pipe
    free_memory()

    stages = PixartBatchStages(
        checkpoint,
        ctx.dit_dtype,
        ctx.device,
        ctx.embedding_dtype,
        spec.transformer["caption_channels"],
        spec.vae["latent_channels"],
        vae_scale_factor(ctx),
        spec.steps,
        spec.guidance,
    )
    stages_class = stages.pipeline_class_name()
    batch4 = stages(rows, batch_size=len(rows))
    batch1 = stages(rows, batch_size=1)
    del stages
    free_memory()

    stacked = np.stack([image.astype(np.float32) for image in batch4[:2]])  # the two square rows
    result = {
        "rows": [{"height": r.height, "width": r.width, "num_tokens": r.embedding.shape[0], "seed": r.seed} for r in rows],
        "diffusers_pipeline": diffusers_class,
        "stages_pipeline": stages_class,
        "stages_b4_vs_diffusers_same_inputs": compare(batch4, same_inputs),
        f"stages_b4_vs_diffusers_padded_{max_tokens}": compare(batch4, padded),
        "stages_b4_vs_diffusers_batch1": compare(batch4, single),
        "stages_b1_vs_b4": compare(batch1, batch4),
        # non-degenerate images: pixels vary, different seeds give different images
        "pixel_std": round(float(stacked.std()), 2),
        "saturated_fraction": round(float(np.mean([(image == 0).mean() + (image == 255).mean() for image in batch4])), 4),
        "mean_abs_between_seeds": round(float(np.abs(stacked[0] - stacked[1]).mean()), 2),
    }
    result["non_degenerate"] = result["pixel_std"] > 5 and result["mean_abs_between_seeds"] > 5
    out = ctx.out / "parity"
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for i, image in enumerate(batch4):  # a look at what the random model makes (small thumbnails)
        thumbnail = Image.fromarray(image)
        thumbnail.thumbnail((256, 256))
        thumbnail.save(out / f"{label}-row{i}.png")
    return result


@section("parity")
def parity_section(ctx: Context) -> None:
    parity = ctx.results.setdefault("parity", {})
    failures = []
    for label in ctx.spec.sizes:
        try:
            parity[label] = parity_for(ctx, label)
        except Exception as exc:  # one size failing must not lose the other
            traceback.print_exc()
            parity[label] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            failures.append(label)
            free_memory()
        print(f"  {label}: {json.dumps({k: v for k, v in parity[label].items() if k != 'rows'})}", flush=True)
        ctx.write()
    if failures:
        raise RuntimeError(f"parity failed for {failures}")


@section("throughput")
def throughput_section(ctx: Context) -> None:
    """(a) a plain diffusers loop vs (b) the stages, same rows, same batch size."""
    spec = ctx.spec
    label = ctx.big
    side = spec.sizes[label][0] * 8
    count = spec.warmup_images + spec.throughput_images
    draw = random.Random(5)
    lengths = [draw.randint(8, 96) for _ in range(count)]  # typical captions, not all near the 120 limit
    rows = make_rows(ctx, [(side, side)] * count, lengths, seeds=list(range(1000, 1000 + count)), seed=9)
    warmup, measured = rows[: spec.warmup_images], rows[spec.warmup_images :]
    batches = [measured[i : i + spec.batch_size] for i in range(0, len(measured), spec.batch_size)]
    result = ctx.results.setdefault("throughput", {})
    result.update(
        size=f"{side}x{side}",
        steps=spec.steps,
        guidance=spec.guidance,
        batch_size=spec.batch_size,
        images=len(measured),
        warmup_images=len(warmup),
        dtype=_DTYPE_NAMES[ctx.dit_dtype],
        mean_num_tokens=round(sum(lengths[spec.warmup_images :]) / len(measured), 1),
    )

    def record(name: str, seconds: float) -> None:
        result[name] = {
            "s_per_image": round(seconds / len(measured), 4),
            "images_per_s": round(len(measured) / seconds, 3),
            "peak_memory_GB": peak_gb(),
        }
        print(f"  {name}: {result[name]}", flush=True)

    pipe = load_diffusers(ctx, ctx.checkpoint(label))
    run_diffusers(ctx, pipe, warmup, pad_to=spec.max_tokens, output_type="pil")
    reset_peak()
    _, seconds = timed(
        lambda pipe=pipe: [run_diffusers(ctx, pipe, batch, pad_to=spec.max_tokens, output_type="pil") for batch in batches]
    )
    record("a_diffusers_loop", seconds)
    del pipe
    free_memory()

    stages = PixartBatchStages(
        ctx.checkpoint(label),
        ctx.dit_dtype,
        ctx.device,
        ctx.embedding_dtype,
        spec.transformer["caption_channels"],
        spec.vae["latent_channels"],
        vae_scale_factor(ctx),
        spec.steps,
        spec.guidance,
    )
    stages(warmup, batch_size=spec.batch_size)
    reset_peak()
    _, seconds = timed(lambda stages=stages: stages(measured, batch_size=spec.batch_size))
    record("b_pixart_batch_stages", seconds)
    del stages
    free_memory()
    ratio = result["b_pixart_batch_stages"]["images_per_s"] / result["a_diffusers_loop"]["images_per_s"]
    result["ratio_b_over_a_images_per_s"] = round(ratio, 3)
    ctx.results.setdefault("memory_GB", {}).update(
        pipe_baseline=result["a_diffusers_loop"]["peak_memory_GB"], stages=result["b_pixart_batch_stages"]["peak_memory_GB"]
    )


@section("t5")
def t5_section(ctx: Context) -> None:
    spec = ctx.spec
    model, build_s = timed(lambda: build_t5(ctx, spec.t5, ctx.t5_dtype, seed=3))
    result = ctx.results.setdefault("t5", {})
    result.update(
        dtype=_DTYPE_NAMES[ctx.t5_dtype],
        batch=spec.t5_batch,
        build_s=round(build_s, 2),
        params_M=round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    )
    free_memory()
    reset_peak()
    generator = torch.Generator("cpu").manual_seed(4)
    for length in spec.t5_lengths:
        ids = torch.randint(0, 32000, (spec.t5_batch, length), generator=generator).to(ctx.device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            seconds = median_time(
                lambda model=model, ids=ids, mask=mask: model(input_ids=ids, attention_mask=mask).last_hidden_state
            )
        result[f"prompts_per_s_{length}"] = round(spec.t5_batch / seconds, 1)
    result["peak_memory_GB"] = peak_gb()
    ctx.results.setdefault("memory_GB", {})["t5"] = result["peak_memory_GB"]
    print(f"  {result}", flush=True)
    del model
    free_memory()


@section("dit_step")
def dit_step_section(ctx: Context) -> None:
    """One transformer call on both CFG branches (2B latents), per image, eager."""
    spec = ctx.spec
    sample_size = spec.sizes[ctx.big][0]
    model = build_transformer(ctx, sample_size, ctx.dit_step_dtype, seed=10)
    free_memory()
    reset_peak()
    result = ctx.results.setdefault("dit_step", {})
    result.update(dtype=_DTYPE_NAMES[ctx.dit_step_dtype], size=f"{sample_size * 8}x{sample_size * 8}", tokens=spec.max_tokens)
    d_model, dtype, device = spec.transformer["caption_channels"], ctx.dit_step_dtype, ctx.device
    for batch in spec.component_batches:
        n = 2 * batch
        latents = torch.randn(n, 4, sample_size, sample_size, device=device, dtype=dtype)
        encoder = torch.randn(n, spec.max_tokens, d_model, device=device, dtype=dtype) * 0.2
        mask = torch.ones(n, spec.max_tokens, device=device, dtype=torch.long)
        timestep = torch.full((n,), 500, device=device)
        added = {
            "resolution": torch.tensor([[sample_size * 8.0] * 2] * n, device=device, dtype=dtype),
            "aspect_ratio": torch.ones(n, 1, device=device, dtype=dtype),
        }
        with torch.inference_mode():
            seconds = median_time(
                lambda model=model, latents=latents, encoder=encoder, mask=mask, timestep=timestep, added=added: model(
                    latents,
                    encoder_hidden_states=encoder,
                    encoder_attention_mask=mask,
                    timestep=timestep,
                    added_cond_kwargs=added,
                    return_dict=False,
                ),
                warmup=2,
                reps=5,
            )
        result[f"s_per_image_b{batch}"] = round(seconds / batch, 4)
    result["peak_memory_GB"] = peak_gb()
    ctx.results.setdefault("memory_GB", {})["dit_step"] = result["peak_memory_GB"]
    print(f"  {result}", flush=True)
    del model
    free_memory()


@section("vae")
def vae_section(ctx: Context) -> None:
    spec = ctx.spec
    sample_size = spec.sizes[ctx.big][0]
    model = build_vae(ctx, ctx.vae_dtype, seed=1)
    free_memory()
    reset_peak()
    result = ctx.results.setdefault("vae", {})
    result.update(dtype=_DTYPE_NAMES[ctx.vae_dtype], size=f"{sample_size * 8}x{sample_size * 8}")
    for batch in spec.component_batches:
        latents = torch.randn(batch, 4, sample_size, sample_size, device=ctx.device, dtype=ctx.vae_dtype)
        with torch.inference_mode():
            seconds = median_time(
                lambda model=model, latents=latents: model.decode(latents / model.config.scaling_factor, return_dict=False)[0]
            )
        result[f"s_per_image_b{batch}"] = round(seconds / batch, 4)
    result["peak_memory_GB"] = peak_gb()
    ctx.results.setdefault("memory_GB", {})["vae"] = result["peak_memory_GB"]
    print(f"  {result}", flush=True)
    del model
    free_memory()


@section("sigma")
def sigma_section(ctx: Context) -> None:
    """PixArt-Σ-XL-2 at the large size: its own random checkpoint, then parity as for α (Σ embeddings, 300 tokens)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

    spec = ctx.spec
    label = ctx.big
    sample_size, buckets = spec.sizes[label]
    result = ctx.results.setdefault("sigma", {})
    vae, vae_s = timed(lambda: build_vae(ctx, ctx.dit_dtype, seed=21, config=sigma_vae_config(spec.vae)))
    transformer, transformer_s = timed(
        lambda: build_transformer(ctx, sample_size, ctx.dit_dtype, seed=20, config=sigma_transformer_config(spec.transformer))
    )
    pipe = PixArtSigmaPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=DPMSolverMultistepScheduler(**SCHEDULER)
    )
    target = ctx.workdir / f"pixart-sigma-xl2-{label}"
    shutil.rmtree(target, ignore_errors=True)
    _, save_s = timed(lambda pipe=pipe, target=target: pipe.save_pretrained(target, safe_serialization=True))
    result["checkpoint"] = {
        "model_index_class": json.loads((target / "model_index.json").read_text())["_class_name"],
        "transformer_sample_size": transformer.config.sample_size,
        "use_additional_conditions": transformer.use_additional_conditions,
        "vae_scaling_factor": vae.config.scaling_factor,
        "vae_force_upcast": vae.config.force_upcast,
        "vae_sample_size": vae.config.sample_size,
        "MB": round(sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 1e6, 1),
        "build_s": round(vae_s + transformer_s, 2),
        "save_s": round(save_s, 2),
    }
    print(f"  {target}: {json.dumps(result['checkpoint'])}", flush=True)
    del pipe, transformer, vae
    free_memory()
    result["family"] = family_of_checkpoint(target)
    ctx.write()

    rows = make_rows(ctx, buckets, list(spec.sigma_prompt_lengths), seeds=[511, 522, 533, 544], seed=507)
    parity = parity_check(
        ctx,
        target,
        rows,
        spec.sigma_max_tokens,
        "PixArtSigmaPipeline",
        f"sigma-{label}",
        max_sequence_length=spec.sigma_max_tokens,
    )
    result["parity"] = parity
    result["pass"] = all(parity[key]["pass"] for key in parity_rows(spec.sigma_max_tokens))
    print(f"  {label}: {json.dumps({k: v for k, v in parity.items() if k != 'rows'})}", flush=True)
    if parity["stages_pipeline"] != "PixArtSigmaPipeline" or parity["diffusers_pipeline"] != "PixArtSigmaPipeline":
        raise RuntimeError(
            f"expected PixArtSigmaPipeline on both sides, got diffusers {parity['diffusers_pipeline']}, "
            f"stages {parity['stages_pipeline']}"
        )


def pixel_diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    """max / mean |Δ| of two uint8 image tensors, and the fraction of values that differ by more than 2."""
    diff = (a.to(torch.int16) - b.to(torch.int16)).abs()
    return {
        "max_abs": int(diff.max()),
        "mean_abs": round(float(diff.float().mean()), 4),
        "fraction_over_2": round(float((diff > 2).float().mean()), 5),
    }


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """VAE output [-1, 1] to uint8 on the CPU, as diffusers' postprocess + numpy_to_pil (round(x * 255))."""
    return ((images / 2 + 0.5).clamp(0, 1).float() * 255).round().to(torch.uint8).cpu()


def lowvram_t5(ctx: Context, result: dict) -> None:
    """(a) T5-XXL bf16 vs torchao int8 weight-only: weights, peak while encoding, deviation; (b) memory once deleted."""
    spec = ctx.spec
    count, limit = spec.lowvram_t5_prompts, spec.sigma_max_tokens
    draw = random.Random(6)
    lengths = [limit] + [draw.randint(5, limit) for _ in range(count - 1)]
    width = max(lengths)  # padded to the longest, as the encode stage pads a batch
    generator = torch.Generator("cpu").manual_seed(8)
    ids = torch.randint(3, 32000, (count, width), generator=generator)
    mask = torch.zeros(count, width, dtype=torch.long)
    for i, length in enumerate(lengths):
        ids[i, length - 1], ids[i, length:], mask[i, :length] = 1, 0, 1  # </s>, then <pad>
    valid = mask.bool()
    int8_error = None
    result.update(
        dtype=_DTYPE_NAMES[ctx.t5_dtype],
        prompts=count,
        min_tokens=min(lengths),
        max_tokens=width,
        mean_tokens=round(sum(lengths) / count, 1),
    )
    ids, mask = ids.to(ctx.device), mask.to(ctx.device)
    free_memory()
    baseline = allocated_gb()
    result["baseline_allocated_GB"] = baseline

    def above_baseline(value):
        return None if value is None else round(value - baseline, 3)

    def encode(model, ids=ids, mask=mask):  # bound now: the names are deleted before the section ends
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

    def measure(model) -> tuple[dict, torch.Tensor]:
        free_memory()
        info = {"weights_GB": above_baseline(allocated_gb())}
        reset_peak()
        info["encode_s"] = round(median_time(lambda: encode(model), warmup=1, reps=3), 4)
        info["peak_GB"] = peak_gb()
        output = encode(model).float().cpu()
        info["finite"] = bool(torch.isfinite(output[valid]).all())
        return info, output

    model = build_t5(ctx, spec.t5, ctx.t5_dtype, seed=3)
    result["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    result["bf16"], reference = measure(model)
    print(f"  T5 {result['dtype']}: {result['bf16']}", flush=True)
    # The yardstick for int8's deviation: the same weights in float32 against the bf16 result. A deep
    # network with random weights amplifies any perturbation; bf16 rounding shows how much.
    try:
        import copy

        wide = copy.deepcopy(model).float()
        exact = encode(wide).float().cpu()
        del wide
        free_memory()
        a, b = exact[valid], reference[valid]
        delta = (a - b).abs()
        result["bf16_vs_fp32"] = {
            "max_abs_delta": round(float(delta.max()), 4),
            "relative_mean_abs_delta": round(float(delta.mean() / a.abs().mean()), 5),
            "cosine_min": round(float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()), 5),
        }
        print(f"  T5 bf16 vs fp32: {result['bf16_vs_fp32']}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a yardstick, not a check
        result["bf16_vs_fp32"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}

    if importlib.util.find_spec("torchao") is None:
        result["int8"] = {"skipped": "torchao not installed"}
    else:
        try:
            import torchao

            version = torchao.__version__
        except Exception as exc:  # noqa: BLE001 - an unusable torchao is a skip, not a failure of the rest
            result["int8"] = {"skipped": f"torchao does not import: {type(exc).__name__}: {exc}"[:300]}
        else:
            try:
                # load_text_encoder loads int8 encoders on the CPU and quantizes layer by layer onto the
                # device: start from the CPU copy, as from_pretrained(..., device "cpu") gives it.
                model = model.to("cpu")
                free_memory()
                reset_peak()
                (model, how), quantize_s = timed(
                    lambda model=model: quantize_text_encoder_int8(model, ctx.t5_dtype, ctx.device, limit)
                )
                quantize_peak = peak_gb()
                info, output = measure(model)
                a, b = reference[valid], output[valid]
                delta = (a - b).abs()
                info.update(
                    torchao=version,
                    how=how,
                    quantize_s=round(quantize_s, 2),
                    quantize_peak_GB=quantize_peak,
                    max_abs_delta=round(float(delta.max()), 4),
                    mean_abs_delta=round(float(delta.mean()), 5),
                    mean_abs_bf16=round(float(a.abs().mean()), 4),
                    relative_mean_abs_delta=round(float(delta.mean() / a.abs().mean()), 5),
                    cosine_min=round(float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()), 5),
                )
                result["int8"] = info
            except Exception as exc:  # still measure (b) below
                traceback.print_exc()
                int8_error = result["int8"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(f"  T5 int8: {result['int8']}", flush=True)

    del model, ids, mask
    free_memory()
    # (b) what the encode actor leaves behind when it exits (here: the process goes on, the memory must be free)
    ctx.results["lowvram"]["freed"] = {
        "allocated_GB": allocated_gb(),
        "reserved_GB": reserved_gb(),
        "allocated_above_baseline_GB": above_baseline(allocated_gb()),
    }
    print(f"  after deleting the encoder: {ctx.results['lowvram']['freed']}", flush=True)
    if int8_error:
        raise RuntimeError(f"int8: {int8_error['error']}")


def lowvram_vae(ctx: Context, result: dict) -> None:
    """(c) VAE decode untiled vs tiled (two sizes), and a batch with vs without slicing: peaks, pixel deltas."""
    spec = ctx.spec
    free_memory()
    baseline = allocated_gb()
    vae = build_vae(ctx, ctx.vae_dtype, seed=1)
    free_memory()
    result.update(
        dtype=_DTYPE_NAMES[ctx.vae_dtype],
        baseline_allocated_GB=baseline,
        weights_GB=None if baseline is None else round(allocated_gb() - baseline, 3),
        tile_sample_min_size=vae.tile_sample_min_size,
        tile_latent_min_size=vae.tile_latent_min_size,
        tile_overlap_factor=vae.tile_overlap_factor,
    )
    scale = vae.config.scaling_factor
    scale_factor = vae_scale_factor(ctx)

    def latents(batch: int, side: int, seed: int) -> torch.Tensor:
        generator = torch.Generator(ctx.device).manual_seed(seed)
        return torch.randn(batch, 4, side, side, generator=generator, device=ctx.device).to(ctx.vae_dtype)

    def decode(z: torch.Tensor, vae=vae) -> tuple[torch.Tensor, dict]:  # vae bound now: deleted at the end
        free_memory()
        reset_peak()
        with torch.inference_mode():
            images, seconds = timed(lambda: vae.decode(z / scale, return_dict=False)[0])
        info = {"peak_GB": peak_gb(), "s": round(seconds, 3)}
        pixels = to_uint8(images)
        del images
        return pixels, info

    decode(latents(1, spec.lowvram_vae_latents[0] // 2, seed=99))  # warm-up (first-call setup off the timings)
    for index, side in enumerate(spec.lowvram_vae_latents):
        z = latents(1, side, seed=40 + index)
        vae.disable_tiling()
        untiled, untiled_info = decode(z)
        vae.enable_tiling()
        tiled, tiled_info = decode(z)
        vae.disable_tiling()
        entry = {
            "pixels": f"{side * scale_factor}x{side * scale_factor}",
            "untiled": untiled_info,
            "tiled": tiled_info,
            "tiled_vs_untiled": pixel_diff(tiled, untiled),
        }
        result[f"latent_{side}"] = entry
        print(f"  VAE {entry['pixels']}: {entry}", flush=True)
        del z, untiled, tiled
        ctx.write()

    side, batch = spec.lowvram_vae_latents[0], spec.lowvram_slicing_batch
    z = latents(batch, side, seed=50)
    vae.disable_slicing()
    whole, whole_info = decode(z)
    vae.enable_slicing()
    sliced, sliced_info = decode(z)
    vae.disable_slicing()
    diff = pixel_diff(sliced, whole)
    result["slicing"] = {
        "pixels": f"{side * scale_factor}x{side * scale_factor}",
        "batch": batch,
        "unsliced": whole_info,
        "sliced": sliced_info,
        "sliced_vs_unsliced": diff,
        "pass": diff["max_abs"] <= 1,
    }
    print(f"  VAE slicing: {result['slicing']}", flush=True)
    del vae, z, whole, sliced
    free_memory()


@section("lowvram")
def lowvram_section(ctx: Context) -> None:
    """The low-VRAM recipe's pieces at real size: int8 T5, the encoder's memory freed, VAE tiling and slicing."""
    result = ctx.results.setdefault("lowvram", {})
    if not ctx.cuda:
        result["memory"] = "n/a on CPU"
    failures = []
    for part, fn in (("t5", lowvram_t5), ("vae", lowvram_vae)):
        try:
            fn(ctx, result.setdefault(part, {}))
        except Exception as exc:  # one part failing must not lose the other
            traceback.print_exc()
            result[part]["error"] = f"{type(exc).__name__}: {exc}"[:500]
            failures.append(part)
            free_memory()
        ctx.write()
    if failures:
        raise RuntimeError(f"lowvram failed for {failures}")


def with_text_encoder(ctx: Context, source: Path, checkpoint: Path) -> Path:
    """``checkpoint``: a full pipeline checkpoint (what ``from_pretrained`` and the CLI load) made of
    ``source`` (a built transformer + VAE + scheduler, hard-linked) plus ``spec.e2e_t5`` (T5-XXL's
    width, fewer layers: saving 24 layers takes minutes) and a locally built tokenizer."""
    if not (source / "model_index.json").is_file():
        raise RuntimeError(f"{source}: no checkpoint (the build section failed?)")
    shutil.rmtree(checkpoint, ignore_errors=True)

    def link_or_copy(src, dst):  # the weights are large; a hard link costs nothing
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, checkpoint, copy_function=link_or_copy)
    tokenizer_dir, entries = tiny_tokenizer(ctx.workdir)
    shutil.copytree(tokenizer_dir, checkpoint / "tokenizer")
    text_encoder = build_t5(ctx, ctx.spec.e2e_t5, ctx.t5_dtype, seed=5)
    text_encoder.save_pretrained(checkpoint / "text_encoder", safe_serialization=True)
    del text_encoder
    free_memory()
    index = json.loads((checkpoint / "model_index.json").read_text())
    index.update(entries)
    (checkpoint / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return checkpoint


@section("e2e")
def e2e_section(ctx: Context) -> None:
    """The real CLI on the large checkpoint plus a small T5 text encoder and a locally built tokenizer."""
    result = ctx.results.setdefault("e2e", {})
    missing = [name for name in E2E_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        result["skipped"] = f"not installed here: {', '.join(missing)} (too large to carry as wheels)"
        print(f"  skipped: {result['skipped']}", flush=True)
        return
    spec = ctx.spec
    checkpoint = with_text_encoder(ctx, ctx.checkpoint(ctx.big), ctx.workdir / "e2e-checkpoint")

    output = ctx.workdir / "e2e-output"
    shutil.rmtree(output, ignore_errors=True)
    config = E2E_CONFIG_GPU if ctx.cuda else E2E_CONFIG_CPU
    generate, verify = e2e_commands(
        config, checkpoint, ROOT / "examples" / "prompts.txt", output, steps=spec.steps if ctx.small else None
    )
    result["command"] = " ".join(generate[1:])
    env = dict(os.environ, RAY_DATA_DISABLE_PROGRESS_BARS="1")
    start = time.perf_counter()
    try:
        process = subprocess.run(generate, cwd=ROOT, env=env, capture_output=True, text=True, timeout=spec.e2e_timeout_s)
    except subprocess.TimeoutExpired as exc:
        tail = ((exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""))[-3000:]
        print(tail, flush=True)
        raise RuntimeError(f"generate did not finish within {spec.e2e_timeout_s} s") from None
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["generate_exit"] = process.returncode
    print("\n".join((process.stdout + process.stderr).splitlines()[-40:]), flush=True)
    if process.returncode != 0:
        raise RuntimeError(f"generate exited with {process.returncode}")
    result.update(e2e_report(output))
    checked = subprocess.run(verify, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    result["verify_exit"] = checked.returncode
    print((checked.stdout + checked.stderr)[-2000:], flush=True)
    print(f"  {result}", flush=True)
    if checked.returncode != 0:
        raise RuntimeError(f"verify exited with {checked.returncode}")


# ------------------------------------------------------------------ report


def _cell(value, fmt: str = "{}") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return fmt.format(value)


def parity_rows(max_tokens: int) -> dict[str, str]:
    """The parity comparisons: result key -> table text."""
    return {
        "stages_b4_vs_diffusers_same_inputs": "stages (batch 4) vs diffusers, same batches and padding",
        f"stages_b4_vs_diffusers_padded_{max_tokens}": f"stages (batch 4) vs diffusers, embeddings padded to {max_tokens}",
        "stages_b4_vs_diffusers_batch1": "stages (batch 4) vs diffusers one image per call (a row's reproduction)",
        "stages_b1_vs_b4": "stages batch 1 vs batch 4 (batch invariance)",
    }


def _memory_cell(ctx: Context, value, fmt: str = "{}") -> str:
    return "n/a on CPU" if not ctx.cuda else _cell(value, fmt)


def markdown(ctx: Context) -> str:
    """A section for benchmarks/RESULTS.md, from whatever has been measured so far."""
    R, meta, spec = ctx.results, ctx.results.get("meta", {}), ctx.spec
    if ctx.small:
        title = "CPU smoke test (--small: tiny sizes, numbers meaningless)"
    else:
        title = "PixArt-XL-2 at real sizes, random weights"
    cuda = f" (CUDA {meta['cuda']})" if meta.get("cuda") else ""
    lines = [
        f"## GPU check: {title}",
        "",
        f"{meta.get('card', '?')}, {meta.get('date', '?')}; torch {meta.get('torch', '?')}{cuda}, "
        f"diffusers {meta.get('diffusers', '?')}, transformers {meta.get('transformers', '?')}. Command: `{ctx.command}`.",
        "",
        "| section | status | s |",
        "|---|---|---:|",
    ]
    for name, info in R.get("sections", {}).items():
        lines.append(f"| {name} | {info.get('status')} | {_cell(info.get('seconds'))} |")

    parity = R.get("parity", {})
    if parity:
        lines += [
            "",
            f"**Parity** (uint8 pixels, {spec.steps} steps, CFG {spec.guidance}, {meta.get('dtypes', {}).get('dit')}, "
            f"4 rows per size incl. a non-square bucket, prompt lengths {list(spec.prompt_lengths)}, empty negative; "
            "pass: max |Δ| ≤ 2):",
            "",
            "| size | comparison | max abs Δ | mean abs Δ | pass |",
            "|---|---|---:|---:|---|",
        ]
        healthy = {label: info for label, info in parity.items() if "error" not in info}
        for label, info in parity.items():
            if label not in healthy:
                lines.append(f"| {label} | failed: {info['error'][:120]} | | | |")
                continue
            for key, name in parity_rows(spec.max_tokens).items():
                c = info.get(key, {})
                max_abs, mean_abs, ok = _cell(c.get("max_abs")), _cell(c.get("mean_abs"), "{:.4f}"), _cell(c.get("pass"))
                lines.append(f"| {label} | {name} | {max_abs} | {mean_abs} | {ok} |")
        if healthy:
            lines += [
                "",
                "Images not degenerate (pixel std; mean abs Δ between two seeds): "
                + "; ".join(
                    f"{label}: {info.get('pixel_std')}, {info.get('mean_abs_between_seeds')}" for label, info in healthy.items()
                ),
            ]

    tp = R.get("throughput", {})
    if "a_diffusers_loop" in tp or "b_pixart_batch_stages" in tp:
        lines += [
            "",
            f"**Throughput** ({tp.get('size')}, {tp.get('steps')} steps, CFG {tp.get('guidance')}, {tp.get('dtype')}, "
            f"batch {tp.get('batch_size')}, {tp.get('images')} images after {tp.get('warmup_images')} warm-up, "
            f"mean {tp.get('mean_num_tokens')} valid tokens):",
            "",
            "| method | s/image | images/s | peak GB | design (H200) |",
            "|---|---:|---:|---:|---|",
        ]
        methods = (
            (
                "a_diffusers_loop",
                "(a) plain diffusers loop, embeddings padded to 120, output pil",
                DESIGN["pipe_s_per_image"] + " s/image",
            ),
            ("b_pixart_batch_stages", "(b) pixart_batch Denoiser + Decoder stages", ""),
        )
        for key, name, design in methods:
            c = tp.get(key, {})
            lines.append(
                f"| {name} | {_cell(c.get('s_per_image'))} | {_cell(c.get('images_per_s'))} | "
                f"{_cell(c.get('peak_memory_GB'))} | {design} |"
            )
        lines += ["", f"Ratio (b)/(a) in images/s: {_cell(tp.get('ratio_b_over_a_images_per_s'))}"]

    t5, dit, vae = R.get("t5", {}), R.get("dit_step", {}), R.get("vae", {})
    if t5 or dit or vae:
        lines += ["", "**Components**:", "", "| what | value | design (H200) |", "|---|---|---|"]
        for length in spec.t5_lengths:
            lines.append(
                f"| T5 encode, {t5.get('dtype')}, {t5.get('batch')} prompts padded to {length} tokens, prompts/s | "
                f"{_cell(t5.get(f'prompts_per_s_{length}'))} | {DESIGN.get(f't5_prompts_per_s_{length}', '')} |"
            )
        for batch in spec.component_batches:
            value = _cell(dit.get(f"s_per_image_b{batch}"))
            lines.append(
                f"| DiT step with CFG, {dit.get('dtype')} eager, {dit.get('size')}, {dit.get('tokens')} tokens, "
                f"batch {batch}, s/image | {value} | {DESIGN['dit_step_bf16_s_per_image']} |"
            )
        for batch in spec.component_batches:
            lines.append(
                f"| VAE decode, {vae.get('dtype')}, {vae.get('size')}, batch {batch}, s/image | "
                f"{_cell(vae.get(f's_per_image_b{batch}'))} | {DESIGN['vae_decode_s_per_image']} |"
            )
        memory = {name: value for name, value in R.get("memory_GB", {}).items() if value is not None}
        if memory:
            lines += [
                "",
                "Peak GPU memory per phase (torch.cuda.max_memory_allocated, GB, weights included): "
                + ", ".join(f"{name} {value}" for name, value in memory.items()),
            ]

    lines += sigma_markdown(ctx) + lowvram_markdown(ctx)

    e2e = R.get("e2e", {})
    if "skipped" in e2e:
        lines += ["", f"**End to end**: skipped ({e2e['skipped']})."]
    elif e2e:
        lines += [
            "",
            f"**End to end** (`python3 {e2e.get('command')}`; the large checkpoint, a 2-layer T5 text encoder):",
            "",
            "| wall s | images | images/s (run_report) | failed | verify exit |",
            "|---:|---:|---:|---:|---:|",
            f"| {_cell(e2e.get('wall_s'))} | {_cell(e2e.get('images_generated'))} | "
            f"{_cell(e2e.get('images_per_second'), '{:.3f}')} | {_cell(e2e.get('images_failed'))} | "
            f"{_cell(e2e.get('verify_exit'))} |",
        ]
    return "\n".join(lines) + "\n"


def sigma_markdown(ctx: Context) -> list[str]:
    sigma, spec, meta = ctx.results.get("sigma", {}), ctx.spec, ctx.results.get("meta", {})
    if not sigma:
        return []
    ckpt, family, parity = sigma.get("checkpoint", {}), sigma.get("family", {}), sigma.get("parity", {})
    lines = [
        "",
        f"**PixArt-Σ parity** ({ctx.big}, random PixArt-Σ-XL-2 checkpoint: `{ckpt.get('model_index_class')}`, "
        f"transformer use_additional_conditions={ckpt.get('use_additional_conditions')}, SDXL-style VAE config "
        f"(SD architecture, scaling_factor {ckpt.get('vae_scaling_factor')}, force_upcast {ckpt.get('vae_force_upcast')}, "
        f"sample_size {ckpt.get('vae_sample_size')}); pixart_batch family {family.get('name')} "
        f"(max {family.get('max_sequence_length')} tokens); diffusers `{parity.get('diffusers_pipeline')}` vs stages "
        f"driving `{parity.get('stages_pipeline')}`; uint8 pixels, {spec.steps} steps, CFG {spec.guidance}, "
        f"{meta.get('dtypes', {}).get('dit')}, prompt lengths {list(spec.sigma_prompt_lengths)}, "
        f"max_sequence_length {spec.sigma_max_tokens}; pass: max |Δ| ≤ 2):",
        "",
    ]
    if not parity:
        error = ctx.results.get("sections", {}).get("sigma", {}).get("error", "section did not finish")
        return lines + [f"not measured ({error})"]
    lines += ["| comparison | max abs Δ | mean abs Δ | pass |", "|---|---:|---:|---|"]
    for key, name in parity_rows(spec.sigma_max_tokens).items():
        c = parity.get(key, {})
        lines.append(f"| {name} | {_cell(c.get('max_abs'))} | {_cell(c.get('mean_abs'), '{:.4f}')} | {_cell(c.get('pass'))} |")
    lines += [
        "",
        f"Images not degenerate (pixel std; mean abs Δ between two seeds): {parity.get('pixel_std')}, "
        f"{parity.get('mean_abs_between_seeds')}",
    ]
    return lines


def lowvram_markdown(ctx: Context) -> list[str]:
    low = ctx.results.get("lowvram", {})
    if not low:
        return []
    m = lambda value: _memory_cell(ctx, value)  # noqa: E731
    gb = lambda value: m(value) + (" GB" if ctx.cuda and value is not None else "")  # noqa: E731
    t5, vae, freed = low.get("t5", {}), low.get("vae", {}), low.get("freed", {})
    lines = [
        "",
        "**Low VRAM** (the recipe's pieces at real size, random weights; GB = torch.cuda.memory_allocated / "
        "max_memory_allocated, the peak reset before each phase, weights included):",
    ]
    if t5:
        int8 = t5.get("int8", {})
        lines += [
            "",
            f"| T5-XXL encoder ({t5.get('params_M')} M params), {t5.get('prompts')} prompts of "
            f"{t5.get('min_tokens')}–{t5.get('max_tokens')} tokens (mean {t5.get('mean_tokens')}), padded to the longest "
            "| weights GB | peak GB while encoding | encode s |",
            "|---|---:|---:|---:|",
        ]
        bf16 = t5.get("bf16", {})
        lines.append(
            f"| {t5.get('dtype')} | {m(bf16.get('weights_GB'))} | {m(bf16.get('peak_GB'))} | {_cell(bf16.get('encode_s'))} |"
        )
        if "skipped" in int8 or "error" in int8:
            lines.append(f"| int8 weight-only (torchao) | {int8.get('skipped') or 'failed: ' + int8['error'][:120]} | | |")
        elif int8:
            lines.append(
                f"| int8 weight-only (torchao {int8.get('torchao')}) | {m(int8.get('weights_GB'))} | "
                f"{m(int8.get('peak_GB'))} | {_cell(int8.get('encode_s'))} |"
            )
            lines += [
                "",
                f"int8 vs {t5.get('dtype')} embeddings on the valid tokens: max |Δ| {int8.get('max_abs_delta')}, "
                f"mean |Δ| {int8.get('mean_abs_delta')} = {int8.get('relative_mean_abs_delta')} of mean |x| "
                f"({int8.get('mean_abs_bf16')}), min cosine similarity per token {int8.get('cosine_min')}; "
                f"finite: {_cell(int8.get('finite'))}. Peak while quantizing (load_text_encoder: the {t5.get('dtype')} "
                "weights on the CPU, each linear layer moved to the device and quantized there): "
                f"{gb(int8.get('quantize_peak_GB'))}, "
                f"{int8.get('quantize_s')} s. Quantized by: {int8.get('how')}.",
            ]
            yard = t5.get("bf16_vs_fp32") or {}
            if "relative_mean_abs_delta" in yard:
                lines += [
                    "",
                    f"Yardstick, the same weights: {t5.get('dtype')} vs float32: max |Δ| {yard['max_abs_delta']}, "
                    f"mean |Δ| {yard['relative_mean_abs_delta']} of mean |x|, min cosine {yard['cosine_min']} "
                    "(random deep networks amplify any perturbation; real-weight quality is not measured here).",
                ]
        if "error" in t5:
            lines += ["", f"T5 part failed: {t5['error'][:200]}"]
    if freed:
        lines += [
            "",
            "| after deleting the encoder, gc.collect(), torch.cuda.empty_cache() | GB |",
            "|---|---:|",
            f"| torch.cuda.memory_allocated() | {m(freed.get('allocated_GB'))} |",
            f"| torch.cuda.memory_reserved() | {m(freed.get('reserved_GB'))} |",
            f"| allocated above the section's starting point ({m(t5.get('baseline_allocated_GB'))}) | "
            f"{m(freed.get('allocated_above_baseline_GB'))} |",
        ]
    sizes = [key for key in vae if key.startswith("latent_")]
    if sizes:
        lines += [
            "",
            f"VAE: the SD VAE (PixArt-α's; tiles of {vae.get('tile_sample_min_size')} px). PixArt-Σ's SDXL VAE config "
            "has sample_size 1024, so its tiles are 1024 px and enable_tiling() changes nothing up to 1024². "
            "Random latents ~ N(0, 1) divided by scaling_factor, as the Decoder decodes; uint8 as diffusers' postprocess.",
            "",
            f"| VAE decode, {vae.get('dtype')}, 1 image (tiles of {vae.get('tile_sample_min_size')} px, overlap "
            f"{vae.get('tile_overlap_factor')}) | untiled peak GB | tiled peak GB | untiled s | tiled s | "
            "tiled vs untiled max abs Δ | mean abs Δ | share of values off by > 2 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in sizes:
            e = vae[key]
            d = e["tiled_vs_untiled"]
            lines.append(
                f"| {e['pixels']} | {m(e['untiled']['peak_GB'])} | {m(e['tiled']['peak_GB'])} | {e['untiled']['s']} | "
                f"{e['tiled']['s']} | {d['max_abs']} | {d['mean_abs']:.4f} | {d['fraction_over_2']} |"
            )
    sl = vae.get("slicing")
    if sl:
        lines += [
            "",
            f"| VAE decode, batch {sl['batch']} at {sl['pixels']} | peak GB | s | max abs Δ vs unsliced | pass (≤ 1) |",
            "|---|---:|---:|---:|---|",
            f"| without slicing | {m(sl['unsliced']['peak_GB'])} | {sl['unsliced']['s']} | | |",
            f"| vae.enable_slicing() | {m(sl['sliced']['peak_GB'])} | {sl['sliced']['s']} | "
            f"{sl['sliced_vs_unsliced']['max_abs']} | {_cell(sl.get('pass'))} |",
        ]
    if vae.get("weights_GB") is not None:
        lines += ["", f"VAE weights: {vae['weights_GB']} GB."]
    if "error" in vae:
        lines += ["", f"VAE part failed: {vae['error'][:200]}"]
    return lines


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="results folder ($OUT)")
    parser.add_argument("--small", action="store_true", help="tiny sizes, 2 steps, 2 images (CPU float32 without CUDA)")
    parser.add_argument(
        "--sections",
        default=",".join(name for name, _ in SECTIONS),
        help="comma-separated subset of: " + ", ".join(name for name, _ in SECTIONS),
    )
    parser.add_argument("--workdir", help="scratch folder for checkpoints (default: a new /tmp/gpu_check-* folder)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the checkpoints after the run")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {name for name, _ in SECTIONS})
    if unknown:
        parser.error(f"unknown sections: {', '.join(unknown)}")
    if not args.small and not torch.cuda.is_available():
        parser.error("no CUDA device: the real sizes need a GPU (use --small for the CPU smoke test)")

    ctx = Context(args)
    start = time.perf_counter()
    for name, fn in SECTIONS:
        if name not in wanted and name != "env":
            continue
        print(f"\n=== {name}", flush=True)
        began = time.perf_counter()
        try:
            fn(ctx)
            status = {"status": "ok"}
        except Exception as exc:  # keep going: the machine is expensive, other numbers still count
            traceback.print_exc()
            status = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
            free_memory()
        status["seconds"] = round(time.perf_counter() - began, 1)
        ctx.results["sections"][name] = status
        print(f"=== {name}: {status['status']} ({status['seconds']} s)", flush=True)
        ctx.write()
    ctx.results["meta"]["total_s"] = round(time.perf_counter() - start, 1)
    ctx.write()
    if not args.keep_workdir and not args.workdir:
        shutil.rmtree(ctx.workdir, ignore_errors=True)

    print("\n=== gpu_check.json\n" + (ctx.out / "gpu_check.json").read_text(), flush=True)
    print("=== gpu_check.md\n" + (ctx.out / "gpu_check.md").read_text(), flush=True)
    failed = [name for name, info in ctx.results["sections"].items() if info["status"] != "ok"]
    print(f"sections failed: {', '.join(failed) or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
