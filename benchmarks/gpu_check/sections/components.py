"""Sections t5, dit_step, vae, sigma."""

from __future__ import annotations

import json
import shutil
from functools import partial

import torch

from gpu_check.adapter import family_of_checkpoint
from gpu_check.builders import build_t5, build_transformer, build_vae, make_rows
from gpu_check.common import DTYPE_NAMES, free_memory, median_time, peak_gb, reset_peak, timed
from gpu_check.configs import SCHEDULER, sigma_transformer_config, sigma_vae_config
from gpu_check.context import Context
from gpu_check.report import parity_rows
from gpu_check.sections.core import parity_check


def t5_section(ctx: Context) -> None:
    spec = ctx.spec
    model, build_s = timed(lambda: build_t5(ctx, spec.t5, ctx.t5_dtype, seed=3))
    result = ctx.results.setdefault("t5", {})
    result.update(
        dtype=DTYPE_NAMES[ctx.t5_dtype],
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
                lambda model=model, ids=ids, mask=mask: (
                    model(input_ids=ids, attention_mask=mask).last_hidden_state
                )
            )
        result[f"prompts_per_s_{length}"] = round(spec.t5_batch / seconds, 1)
    result["peak_memory_GB"] = peak_gb()
    ctx.results.setdefault("memory_GB", {})["t5"] = result["peak_memory_GB"]
    print(f"  {result}", flush=True)
    del model
    free_memory()


def dit_step_section(ctx: Context) -> None:
    """One transformer call on both CFG branches (2B latents), per image, eager."""
    spec = ctx.spec
    sample_size = spec.sizes[ctx.big][0]
    model = build_transformer(ctx, sample_size, ctx.dit_step_dtype, seed=10)
    free_memory()
    reset_peak()
    result = ctx.results.setdefault("dit_step", {})
    result.update(
        dtype=DTYPE_NAMES[ctx.dit_step_dtype],
        size=f"{sample_size * 8}x{sample_size * 8}",
        tokens=spec.max_tokens,
    )
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
                partial(
                    model,
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


def vae_section(ctx: Context) -> None:
    spec = ctx.spec
    sample_size = spec.sizes[ctx.big][0]
    model = build_vae(ctx, ctx.vae_dtype, seed=1)
    free_memory()
    reset_peak()
    result = ctx.results.setdefault("vae", {})
    result.update(dtype=DTYPE_NAMES[ctx.vae_dtype], size=f"{sample_size * 8}x{sample_size * 8}")
    for batch in spec.component_batches:
        latents = torch.randn(batch, 4, sample_size, sample_size, device=ctx.device, dtype=ctx.vae_dtype)
        with torch.inference_mode():
            seconds = median_time(
                lambda model=model, latents=latents: model.decode(
                    latents / model.config.scaling_factor, return_dict=False
                )[0]
            )
        result[f"s_per_image_b{batch}"] = round(seconds / batch, 4)
    result["peak_memory_GB"] = peak_gb()
    ctx.results.setdefault("memory_GB", {})["vae"] = result["peak_memory_GB"]
    print(f"  {result}", flush=True)
    del model
    free_memory()


def sigma_section(ctx: Context) -> None:
    """PixArt-Σ-XL-2 at the large size: its own random checkpoint, then parity as for α (Σ embeddings,
    300 tokens)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

    spec = ctx.spec
    label = ctx.big
    sample_size, buckets = spec.sizes[label]
    result = ctx.results.setdefault("sigma", {})
    vae, vae_s = timed(lambda: build_vae(ctx, ctx.dit_dtype, seed=21, config=sigma_vae_config(spec.vae)))
    transformer, transformer_s = timed(
        lambda: build_transformer(
            ctx, sample_size, ctx.dit_dtype, seed=20, config=sigma_transformer_config(spec.transformer)
        )
    )
    pipe = PixArtSigmaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
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
    if (
        parity["stages_pipeline"] != "PixArtSigmaPipeline"
        or parity["diffusers_pipeline"] != "PixArtSigmaPipeline"
    ):
        raise RuntimeError(
            f"expected PixArtSigmaPipeline on both sides, got diffusers {parity['diffusers_pipeline']}, "
            f"stages {parity['stages_pipeline']}"
        )
