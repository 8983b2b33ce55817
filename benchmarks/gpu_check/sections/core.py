"""Sections env, build, parity, throughput."""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import shutil
import traceback
from pathlib import Path

import numpy as np
import torch

from gpu_check.adapter import PixartBatchStages
from gpu_check.builders import accepted, build_transformer, build_vae, make_rows, vae_scale_factor
from gpu_check.common import DTYPE_NAMES, Row, free_memory, peak_gb, reset_peak, timed
from gpu_check.configs import SCHEDULER
from gpu_check.context import Context
from gpu_check.reference import compare, groups_of, load_diffusers, run_diffusers


def _installed_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


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
        dtypes={
            name: DTYPE_NAMES[getattr(ctx, f"{name}_dtype")]
            for name in ("dit", "embedding", "t5", "dit_step", "vae")
        },
        workdir=str(ctx.workdir),
    )
    for key, value in meta.items():
        print(f"  {key}: {value}", flush=True)


def build_section(ctx: Context) -> None:
    """The 1024 and 512 checkpoints: transformer + VAE + scheduler (no text encoder, no tokenizer)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    dropped = sorted(
        set(ctx.spec.transformer) - set(accepted(PixArtTransformer2DModel, ctx.spec.transformer))
    )
    if dropped:
        print(
            "  transformer config keys this diffusers does not take (ignored, as from_pretrained does): "
            f"{dropped}"
        )
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
        _, seconds = timed(
            lambda pipe=pipe, target=target: pipe.save_pretrained(target, safe_serialization=True)
        )
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
        ctx,
        buckets,
        list(spec.prompt_lengths),
        seeds=[offset + 11, offset + 22, offset + 33, offset + 44],
        seed=offset + 7,
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
    """Plain diffusers (``pipeline_class``) vs the stages on ``rows``: the four comparisons of
    parity_rows()."""
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
        "rows": [
            {"height": r.height, "width": r.width, "num_tokens": r.embedding.shape[0], "seed": r.seed}
            for r in rows
        ],
        "diffusers_pipeline": diffusers_class,
        "stages_pipeline": stages_class,
        "stages_b4_vs_diffusers_same_inputs": compare(batch4, same_inputs),
        f"stages_b4_vs_diffusers_padded_{max_tokens}": compare(batch4, padded),
        "stages_b4_vs_diffusers_batch1": compare(batch4, single),
        "stages_b1_vs_b4": compare(batch1, batch4),
        # non-degenerate images: pixels vary, different seeds give different images
        "pixel_std": round(float(stacked.std()), 2),
        "saturated_fraction": round(
            float(np.mean([(image == 0).mean() + (image == 255).mean() for image in batch4])), 4
        ),
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
        dtype=DTYPE_NAMES[ctx.dit_dtype],
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
        lambda pipe=pipe: [
            run_diffusers(ctx, pipe, batch, pad_to=spec.max_tokens, output_type="pil") for batch in batches
        ]
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
        pipe_baseline=result["a_diffusers_loop"]["peak_memory_GB"],
        stages=result["b_pixart_batch_stages"]["peak_memory_GB"],
    )
