"""Markdown rendering of the results (a section for benchmarks/RESULTS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpu_check.context import Context
from gpu_check.configs import DESIGN


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
        f"stages_b4_vs_diffusers_padded_{max_tokens}": (
            f"stages (batch 4) vs diffusers, embeddings padded to {max_tokens}"
        ),
        "stages_b4_vs_diffusers_batch1": (
            "stages (batch 4) vs diffusers one image per call (a row's reproduction)"
        ),
        "stages_b1_vs_b4": "stages batch 1 vs batch 4 (batch invariance)",
    }


def _memory_cell(ctx: Context, value, fmt: str = "{}") -> str:
    return "n/a on CPU" if not ctx.cuda else _cell(value, fmt)


def markdown(ctx: Context) -> str:
    """A section for benchmarks/RESULTS.md, from whatever has been measured so far."""
    lines = _header_markdown(ctx) + _parity_markdown(ctx) + _throughput_markdown(ctx)
    lines += _components_markdown(ctx) + sigma_markdown(ctx) + lowvram_markdown(ctx) + _e2e_markdown(ctx)
    return "\n".join(lines) + "\n"


def _header_markdown(ctx: Context) -> list[str]:
    """The title, the versions and command, and the table of sections with their status."""
    meta = ctx.results.get("meta", {})
    if ctx.small:
        title = "CPU smoke test (--small: tiny sizes, numbers meaningless)"
    else:
        title = "PixArt-XL-2 at real sizes, random weights"
    cuda = f" (CUDA {meta['cuda']})" if meta.get("cuda") else ""
    lines = [
        f"## GPU check: {title}",
        "",
        f"{meta.get('card', '?')}, {meta.get('date', '?')}; torch {meta.get('torch', '?')}{cuda}, "
        f"diffusers {meta.get('diffusers', '?')}, transformers {meta.get('transformers', '?')}. "
        f"Command: `{ctx.command}`.",
        "",
        "| section | status | s |",
        "|---|---|---:|",
    ]
    for name, info in ctx.results.get("sections", {}).items():
        lines.append(f"| {name} | {info.get('status')} | {_cell(info.get('seconds'))} |")
    return lines


def _parity_markdown(ctx: Context) -> list[str]:
    """The diffusers-vs-stages parity table per size, and whether the images are degenerate."""
    parity, spec, meta = ctx.results.get("parity", {}), ctx.spec, ctx.results.get("meta", {})
    if not parity:
        return []
    lines = [
        "",
        f"**Parity** (uint8 pixels, {spec.steps} steps, CFG {spec.guidance}, "
        f"{meta.get('dtypes', {}).get('dit')}, "
        f"4 rows per size incl. a non-square bucket, prompt lengths {list(spec.prompt_lengths)}, "
        "empty negative; pass: max |Δ| ≤ 2):",
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
            max_abs, mean_abs, ok = (
                _cell(c.get("max_abs")),
                _cell(c.get("mean_abs"), "{:.4f}"),
                _cell(c.get("pass")),
            )
            lines.append(f"| {label} | {name} | {max_abs} | {mean_abs} | {ok} |")
    if healthy:
        lines += [
            "",
            "Images not degenerate (pixel std; mean abs Δ between two seeds): "
            + "; ".join(
                f"{label}: {info.get('pixel_std')}, {info.get('mean_abs_between_seeds')}"
                for label, info in healthy.items()
            ),
        ]
    return lines


def _throughput_markdown(ctx: Context) -> list[str]:
    """The (a) diffusers loop vs (b) pixart_batch stages table and their ratio."""
    tp = ctx.results.get("throughput", {})
    if "a_diffusers_loop" not in tp and "b_pixart_batch_stages" not in tp:
        return []
    lines = [
        "",
        f"**Throughput** ({tp.get('size')}, {tp.get('steps')} steps, CFG {tp.get('guidance')}, "
        f"{tp.get('dtype')}, "
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
    return lines + ["", f"Ratio (b)/(a) in images/s: {_cell(tp.get('ratio_b_over_a_images_per_s'))}"]


def _components_markdown(ctx: Context) -> list[str]:
    """T5 encode, one DiT step and VAE decode against the design's numbers, and peak memory per phase."""
    R, spec = ctx.results, ctx.spec
    t5, dit, vae = R.get("t5", {}), R.get("dit_step", {}), R.get("vae", {})
    if not (t5 or dit or vae):
        return []
    lines = ["", "**Components**:", "", "| what | value | design (H200) |", "|---|---|---|"]
    for length in spec.t5_lengths:
        lines.append(
            f"| T5 encode, {t5.get('dtype')}, {t5.get('batch')} prompts padded to {length} tokens, "
            "prompts/s | "
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
    return lines


def _e2e_markdown(ctx: Context) -> list[str]:
    """The end-to-end CLI run (generate + verify), or why it was skipped."""
    e2e = ctx.results.get("e2e", {})
    if "skipped" in e2e:
        return ["", f"**End to end**: skipped ({e2e['skipped']})."]
    if not e2e:
        return []
    return [
        "",
        f"**End to end** (`python3 {e2e.get('command')}`; the large checkpoint, a 2-layer T5 text encoder):",
        "",
        "| wall s | images | images/s (run_report) | failed | verify exit |",
        "|---:|---:|---:|---:|---:|",
        f"| {_cell(e2e.get('wall_s'))} | {_cell(e2e.get('images_generated'))} | "
        f"{_cell(e2e.get('images_per_second'), '{:.3f}')} | {_cell(e2e.get('images_failed'))} | "
        f"{_cell(e2e.get('verify_exit'))} |",
    ]


def sigma_markdown(ctx: Context) -> list[str]:
    sigma, spec, meta = ctx.results.get("sigma", {}), ctx.spec, ctx.results.get("meta", {})
    if not sigma:
        return []
    ckpt, family, parity = sigma.get("checkpoint", {}), sigma.get("family", {}), sigma.get("parity", {})
    lines = [
        "",
        f"**PixArt-Σ parity** ({ctx.big}, random PixArt-Σ-XL-2 checkpoint: "
        f"`{ckpt.get('model_index_class')}`, "
        f"transformer use_additional_conditions={ckpt.get('use_additional_conditions')}, "
        "SDXL-style VAE config "
        f"(SD architecture, scaling_factor {ckpt.get('vae_scaling_factor')}, "
        f"force_upcast {ckpt.get('vae_force_upcast')}, "
        f"sample_size {ckpt.get('vae_sample_size')}); pixart_batch family {family.get('name')} "
        f"(max {family.get('max_sequence_length')} tokens); "
        f"diffusers `{parity.get('diffusers_pipeline')}` vs stages "
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
        lines.append(
            f"| {name} | {_cell(c.get('max_abs'))} | {_cell(c.get('mean_abs'), '{:.4f}')} | "
            f"{_cell(c.get('pass'))} |"
        )
    lines += [
        "",
        f"Images not degenerate (pixel std; mean abs Δ between two seeds): {parity.get('pixel_std')}, "
        f"{parity.get('mean_abs_between_seeds')}",
    ]
    return lines


def lowvram_markdown(ctx: Context) -> list[str]:
    """The low-VRAM section: T5 bf16 vs int8, memory once the encoder is freed, VAE tiling and slicing."""
    low = ctx.results.get("lowvram", {})
    if not low:
        return []
    t5, vae, freed = low.get("t5", {}), low.get("vae", {}), low.get("freed", {})
    lines = [
        "",
        "**Low VRAM** (the recipe's pieces at real size, random weights; "
        "GB = torch.cuda.memory_allocated / "
        "max_memory_allocated, the peak reset before each phase, weights included):",
    ]
    if t5:
        lines += _lowvram_t5_markdown(ctx, t5)
    if freed:
        m = lambda value: _memory_cell(ctx, value)  # noqa: E731
        lines += [
            "",
            "| after deleting the encoder, gc.collect(), torch.cuda.empty_cache() | GB |",
            "|---|---:|",
            f"| torch.cuda.memory_allocated() | {m(freed.get('allocated_GB'))} |",
            f"| torch.cuda.memory_reserved() | {m(freed.get('reserved_GB'))} |",
            f"| allocated above the section's starting point ({m(t5.get('baseline_allocated_GB'))}) | "
            f"{m(freed.get('allocated_above_baseline_GB'))} |",
        ]
    lines += _lowvram_vae_markdown(ctx, vae)
    if vae.get("weights_GB") is not None:
        lines += ["", f"VAE weights: {vae['weights_GB']} GB."]
    if "error" in vae:
        lines += ["", f"VAE part failed: {vae['error'][:200]}"]
    return lines


def _lowvram_t5_markdown(ctx: Context, t5: dict) -> list[str]:
    """T5-XXL in its dtype vs torchao int8: weights, peak and time; int8's deviation and the yardstick."""
    m = lambda value: _memory_cell(ctx, value)  # noqa: E731
    int8 = t5.get("int8", {})
    lines = [
        "",
        f"| T5-XXL encoder ({t5.get('params_M')} M params), {t5.get('prompts')} prompts of "
        f"{t5.get('min_tokens')}–{t5.get('max_tokens')} tokens (mean {t5.get('mean_tokens')}), "
        "padded to the longest "
        "| weights GB | peak GB while encoding | encode s |",
        "|---|---:|---:|---:|",
    ]
    bf16 = t5.get("bf16", {})
    lines.append(
        f"| {t5.get('dtype')} | {m(bf16.get('weights_GB'))} | {m(bf16.get('peak_GB'))} | "
        f"{_cell(bf16.get('encode_s'))} |"
    )
    if "skipped" in int8 or "error" in int8:
        lines.append(
            f"| int8 weight-only (torchao) | {int8.get('skipped') or 'failed: ' + int8['error'][:120]} | | |"
        )
    elif int8:
        lines.append(
            f"| int8 weight-only (torchao {int8.get('torchao')}) | {m(int8.get('weights_GB'))} | "
            f"{m(int8.get('peak_GB'))} | {_cell(int8.get('encode_s'))} |"
        )
        lines += _int8_deviation_markdown(ctx, t5, int8)
    if "error" in t5:
        lines += ["", f"T5 part failed: {t5['error'][:200]}"]
    return lines


def _int8_deviation_markdown(ctx: Context, t5: dict, int8: dict) -> list[str]:
    """How far int8's embeddings are from the reference dtype's, and the dtype-vs-float32 yardstick."""
    gb = _memory_cell(ctx, int8.get("quantize_peak_GB")) + (
        " GB" if ctx.cuda and int8.get("quantize_peak_GB") is not None else ""
    )
    lines = [
        "",
        f"int8 vs {t5.get('dtype')} embeddings on the valid tokens: max |Δ| {int8.get('max_abs_delta')}, "
        f"mean |Δ| {int8.get('mean_abs_delta')} = {int8.get('relative_mean_abs_delta')} of mean |x| "
        f"({int8.get('mean_abs_bf16')}), min cosine similarity per token {int8.get('cosine_min')}; "
        f"finite: {_cell(int8.get('finite'))}. "
        f"Peak while quantizing (load_text_encoder: the {t5.get('dtype')} "
        "weights on the CPU, each linear layer moved to the device and quantized there): "
        f"{gb}, "
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
    return lines


def _lowvram_vae_markdown(ctx: Context, vae: dict) -> list[str]:
    """VAE decode untiled vs tiled per size, and a batch with and without slicing."""
    m = lambda value: _memory_cell(ctx, value)  # noqa: E731
    lines: list[str] = []
    sizes = [key for key in vae if key.startswith("latent_")]
    if sizes:
        lines += [
            "",
            f"VAE: the SD VAE (PixArt-α's; tiles of {vae.get('tile_sample_min_size')} px). "
            "PixArt-Σ's SDXL VAE config "
            "has sample_size 1024, so its tiles are 1024 px and enable_tiling() changes nothing up to 1024². "
            "Random latents ~ N(0, 1) divided by scaling_factor, as the Decoder decodes; "
            "uint8 as diffusers' postprocess.",
            "",
            f"| VAE decode, {vae.get('dtype')}, 1 image "
            f"(tiles of {vae.get('tile_sample_min_size')} px, overlap "
            f"{vae.get('tile_overlap_factor')}) | untiled peak GB | tiled peak GB | untiled s | tiled s | "
            "tiled vs untiled max abs Δ | mean abs Δ | share of values off by > 2 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in sizes:
            e = vae[key]
            d = e["tiled_vs_untiled"]
            lines.append(
                f"| {e['pixels']} | {m(e['untiled']['peak_GB'])} | {m(e['tiled']['peak_GB'])} | "
                f"{e['untiled']['s']} | "
                f"{e['tiled']['s']} | {d['max_abs']} | {d['mean_abs']:.4f} | {d['fraction_over_2']} |"
            )
    sl = vae.get("slicing")
    if sl:
        lines += [
            "",
            f"| VAE decode, batch {sl['batch']} at {sl['pixels']} | peak GB | s | max abs Δ vs unsliced | "
            "pass (≤ 1) |",
            "|---|---:|---:|---:|---|",
            f"| without slicing | {m(sl['unsliced']['peak_GB'])} | {sl['unsliced']['s']} | | |",
            f"| vae.enable_slicing() | {m(sl['sliced']['peak_GB'])} | {sl['sliced']['s']} | "
            f"{sl['sliced_vs_unsliced']['max_abs']} | {_cell(sl.get('pass'))} |",
        ]
    return lines
