"""Section lowvram: the low-VRAM recipe's pieces."""

from __future__ import annotations

import importlib.util
import random
import traceback
from collections.abc import Callable

import torch

from gpu_check.adapter import quantize_text_encoder_int8
from gpu_check.builders import build_t5, build_vae, vae_scale_factor
from gpu_check.common import (
    DTYPE_NAMES,
    allocated_gb,
    free_memory,
    median_time,
    peak_gb,
    reserved_gb,
    reset_peak,
    timed,
)
from gpu_check.context import Context


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


def t5_inputs(ctx: Context) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """``(lengths, ids, mask)`` of the section's prompts on the CPU: the first ``sigma_max_tokens`` long,
    the rest of random lengths, each ended by ``</s>`` and padded to the longest."""
    count, limit = ctx.spec.lowvram_t5_prompts, ctx.spec.sigma_max_tokens
    draw = random.Random(6)
    lengths = [limit] + [draw.randint(5, limit) for _ in range(count - 1)]
    width = max(lengths)  # padded to the longest, as the encode stage pads a batch
    generator = torch.Generator("cpu").manual_seed(8)
    ids = torch.randint(3, 32000, (count, width), generator=generator)
    mask = torch.zeros(count, width, dtype=torch.long)
    for i, length in enumerate(lengths):
        ids[i, length - 1], ids[i, length:], mask[i, :length] = 1, 0, 1  # </s>, then <pad>
    return lengths, ids, mask


def lowvram_t5(ctx: Context, result: dict) -> None:
    """(a) T5-XXL bf16 vs torchao int8 weight-only: weights, peak while encoding, deviation;
    (b) memory once deleted."""
    spec = ctx.spec
    lengths, ids, mask = t5_inputs(ctx)
    count, width = len(lengths), max(lengths)
    valid = mask.bool()
    result.update(
        dtype=DTYPE_NAMES[ctx.t5_dtype],
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

    model, int8_error = measure_int8(ctx, result, model, measure, reference, valid)
    print(f"  T5 int8: {result['int8']}", flush=True)

    del model, ids, mask
    free_memory()
    # (b) what the encode actor leaves behind when it exits (here: the process goes on, the memory
    # must be free)
    ctx.results["lowvram"]["freed"] = {
        "allocated_GB": allocated_gb(),
        "reserved_GB": reserved_gb(),
        "allocated_above_baseline_GB": above_baseline(allocated_gb()),
    }
    print(f"  after deleting the encoder: {ctx.results['lowvram']['freed']}", flush=True)
    if int8_error:
        raise RuntimeError(f"int8: {int8_error['error']}")


def measure_int8(
    ctx: Context,
    result: dict,
    model: torch.nn.Module,
    measure: Callable[[torch.nn.Module], tuple[dict, torch.Tensor]],
    reference: torch.Tensor,
    valid: torch.Tensor,
) -> tuple[torch.nn.Module, dict | None]:
    """``result["int8"]``: the encoder quantized by torchao weight-only int8 as load_text_encoder does it,
    measured like the reference (``measure``), its embeddings on the valid tokens against ``reference``'s.

    Returns the model now in use (the quantized one, for the caller to delete) and the error dict
    should quantizing or measuring fail (the caller raises it after measuring what is freed).
    """
    limit = ctx.spec.sigma_max_tokens
    int8_error = None
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
    return model, int8_error


def lowvram_vae(ctx: Context, result: dict) -> None:
    """(c) VAE decode untiled vs tiled (two sizes), and a batch with vs without slicing: peaks, pixel
    deltas."""
    spec = ctx.spec
    free_memory()
    baseline = allocated_gb()
    vae = build_vae(ctx, ctx.vae_dtype, seed=1)
    free_memory()
    result.update(
        dtype=DTYPE_NAMES[ctx.vae_dtype],
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

    decode(
        latents(1, spec.lowvram_vae_latents[0] // 2, seed=99)
    )  # warm-up (first-call setup off the timings)
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


def lowvram_section(ctx: Context) -> None:
    """The low-VRAM recipe's pieces at real size: int8 T5, the encoder's memory freed, VAE tiling and
    slicing."""
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
