"""Random seeded XL-size components and checkpoints."""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

import torch

from gpu_check.common import DTYPE_NAMES, Row, free_memory, seeded_init_
from gpu_check.context import Context


def accepted(cls, config: dict) -> dict:
    """The keys of ``config`` that ``cls.__init__`` takes (the hub configs carry a few legacy ones)."""
    parameters = inspect.signature(cls.__init__).parameters
    return {key: value for key, value in config.items() if key in parameters}


def build_transformer(
    ctx: Context, sample_size: int, dtype: torch.dtype, seed: int, config: dict | None = None
):
    """A random PixArt-XL-2 transformer built on the device (fp32 init, then cast)."""
    from diffusers import PixArtTransformer2DModel

    with torch.device(ctx.device):
        config = dict(config or ctx.spec.transformer, sample_size=sample_size)
        model = PixArtTransformer2DModel(**accepted(PixArtTransformer2DModel, config))
    seeded_init_(model, seed)
    return model.to(
        ctx.device, dtype
    ).eval()  # .to(device) too: buffers made from numpy stay on the CPU otherwise


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


def make_rows(
    ctx: Context, buckets: list[tuple[int, int]], lengths: list[int], seeds: list[int], seed: int
) -> list[Row]:
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


def tiny_tokenizer(workdir: Path) -> tuple[Path, dict]:
    """A locally built T5 tokenizer folder (from pixart_batch's tiny checkpoint) and the
    ``model_index.json`` entries for ``tokenizer`` and ``text_encoder``."""
    from pixart_batch.tiny import build_tiny_checkpoint

    tiny = workdir / "tiny-checkpoint"
    if not (
        tiny / "model_index.json"
    ).is_file():  # built once per workdir: every section that needs T5 shares it
        build_tiny_checkpoint(tiny)
    index = json.loads((tiny / "model_index.json").read_text())
    return tiny / "tokenizer", {key: index[key] for key in ("tokenizer", "text_encoder")}


def text_encoder_base(workdir: Path, d_model: int) -> Path:
    """A checkpoint with a (1-layer, random) T5 text encoder of width ``d_model`` and a locally built
    tokenizer: the ``model.components_from`` of the built checkpoints (they have no text encoder), so
    that ``RunSpec.build`` resolves them as the pipeline does and reads T5's width from a real config."""
    target = workdir / f"text-encoder-base-{d_model}"
    if (target / "model_index.json").is_file():
        return target
    from transformers import T5Config, T5EncoderModel

    tokenizer_dir, _ = tiny_tokenizer(workdir)
    tiny = tokenizer_dir.parent
    vocab = json.loads((tiny / "text_encoder" / "config.json").read_text())["vocab_size"]
    scratch = workdir / f"text-encoder-base-{d_model}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(tiny, scratch)
    shutil.rmtree(scratch / "text_encoder")
    config = T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=8,
        d_ff=16,
        num_layers=1,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    T5EncoderModel(config).save_pretrained(scratch / "text_encoder", safe_serialization=True)
    scratch.rename(target)
    return target


def run_spec(
    model_dir: Path,
    dtype: torch.dtype,
    device: str,
    embedding_dtype: torch.dtype,
    d_model: int,
    steps: int,
    guidance: float,
):
    """``pixart_batch.spec.RunSpec`` of a built checkpoint: a ``RunConfig`` with these settings, then
    ``RunSpec.build`` (its stage specs: ``denoise_spec()``, ``decode_spec()``, ...)."""
    from pixart_batch.config import RunConfig, with_overrides
    from pixart_batch.spec import RunSpec

    gpus = 1 if device == "cuda" else 0
    config = with_overrides(
        RunConfig(),
        {
            "model.path": str(model_dir),
            "model.components_from": str(text_encoder_base(model_dir.parent, d_model)),
            "generation.num_inference_steps": steps,
            "generation.guidance_scale": guidance,
            "generation.scheduler": "checkpoint",
            "stages.encode.dtype": DTYPE_NAMES[embedding_dtype],
            "stages.encode.num_gpus": gpus,
            "stages.denoise.dtype": DTYPE_NAMES[dtype],
            "stages.denoise.num_gpus": gpus,
            "stages.decode.dtype": DTYPE_NAMES[dtype],
            "stages.decode.num_gpus": gpus,
            "stages.decode.vae_tiling": False,
            "stages.decode.vae_slicing": False,
        },
    )
    return RunSpec.build(config)
