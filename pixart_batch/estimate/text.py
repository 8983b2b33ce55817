"""The plan's text table (``pixart-batch plan`` without ``--json``), drawn from the JSON form
(:meth:`~pixart_batch.estimate.report.Estimate.to_dict`) so the two cannot disagree."""

from __future__ import annotations

import math
from typing import Any

from ..measured import figures
from .report import Estimate


def fixed(x: float, significant: int = 4, min_decimals: int = 0) -> str:
    """``x`` in fixed notation with about ``significant`` significant digits (``0.0007693``, ``12.35``,
    ``1,235``): the plan's one number style (never ``5.866e-05``)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:.{min_decimals}f}"
    decimals = min(max(min_decimals, significant - 1 - math.floor(math.log10(abs(x)))), 12)
    return f"{x:,.{decimals}f}"


def size_text(n: float) -> str:
    """``n`` bytes in the largest decimal unit it reaches (``1.50 GB``)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def format_estimate(estimate: Estimate) -> str:
    """The table: the model and notes, images per bucket (and label), GPU-hours and cost per GPU kind,
    the store's and the images' sizes, and where each GPU kind's figures come from."""
    data = estimate.to_dict()
    lines = [
        f"model: {data['model']} (from {data['model_facts_from']})",
        *(f"note: {note}" for note in data["notes"]),
    ]
    lines += [
        "",
        f"{data['prompts']:,} prompts → {data['images']:,} images",
        "",
        "bucket (WIDTHxHEIGHT)   images      share",
    ]
    for bucket, count in data["buckets_width_x_height"].items():
        lines.append(f"{bucket:<22}{count:>8,}   {count / max(data['images'], 1):>7.1%}")
    if data.get("images_per_label"):
        lines += ["", "label                   images      share"]
        for label, count in data["images_per_label"].items():
            lines.append(f"{label:<22}{count:>8,}   {count / max(data['images'], 1):>7.1%}")
    lines += ["", *_cost_lines(data, estimate.gpu)]
    lines.append(
        f"embedding store: at most {size_text(data['store_bytes'])} "
        f"({data['distinct_captions']:,} distinct captions, mean {data['mean_tokens']} tokens "
        f"over {data['token_sample']:,} sampled, {data['tokens_counted_by']})"
    )
    lines.append(f"images ({data['image_format']}): about {size_text(data['output_bytes'])}")
    lines.extend(f"{kind} ({figures(kind)['basis']}): {figures(kind)['source']}" for kind in data["per_gpu"])
    return "\n".join(lines)


def _cost_lines(data: dict[str, Any], chosen_gpu: str) -> list[str]:
    """The heading of the cost table and one line per GPU kind (``chosen_gpu`` marked)."""
    price, steps = data["usd_per_gpu_hour"], data["steps"]
    cost = (
        f"at ${fixed(price, 3, 2)}/GPU-hour"
        if price is not None
        else "no price given (estimate.usd_per_gpu_hour or --usd-per-gpu-hour)"
    )
    lines = [f"GPU-hours (DiT + VAE, T5) and cost at {steps} step{'s' * (steps != 1)} per GPU kind, {cost}"]
    for kind, row in data["per_gpu"].items():
        hours = [fixed(row[key]) for key in ("gpu_hours", "gpu_hours_denoise_decode", "gpu_hours_t5")]
        usd = (
            ""
            if row["usd_total"] is None
            else f"  ${fixed(row['usd_total'], 3, 2)} total, "
            f"${fixed(row['usd_per_1000_images'], 3, 2)} per 1,000 images"
        )
        chosen = "  (estimate.gpu)" if kind == chosen_gpu else ""
        lines.append(
            f"{kind:<6}{row['card']:<17}{row['basis']:<10}{hours[0]} GPU-hours ({hours[1]}, {hours[2]})"
            f"{usd}{chosen}"
        )
    return lines
