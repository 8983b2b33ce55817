"""The plan's result, :class:`Estimate`, and its JSON form (``pixart-batch plan --json``,
``api.plan(...).to_dict()``); the text table is :func:`~pixart_batch.estimate.text.format_estimate`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..measured import figures


def significant(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits: the JSON's figures, shown whole by the text."""
    return float(f"{x:.{digits}g}")


def _usd_per_1000(usd: float | None, images: int) -> float | None:
    return None if usd is None or not images else significant(usd / images * 1000)


@dataclass
class Estimate:
    """What a run will make and cost: counts per bucket and label, GPU time per kind, sizes, notes."""

    prompts: int = 0
    images: int = 0
    buckets: Counter = field(default_factory=Counter)
    """``"WIDTHxHEIGHT"`` of the bucket the DiT generates at → images."""
    labels: Counter = field(default_factory=Counter)
    """A labelled prompt file's class name → images (empty: unlabelled)."""
    output_pixels: int = 0
    """Pixels of the saved images (the requested sizes; ``--hw`` images are resized back)."""
    gpu: str = ""
    usd_per_gpu_hour: float | None = None
    steps: int = 0
    dit_gpu_seconds: float = 0.0
    t5_gpu_seconds: float = 0.0
    mean_tokens: float = 0.0
    distinct_captions: int = 0
    """Distinct captions the store would hold (prompts and negative prompts; an upper bound when
    captions are cleaned, as cleaning can only merge texts)."""
    token_sample: int = 0
    tokens_counted_by: str = ""
    store_bytes: float = 0.0
    output_bytes: float = 0.0
    image_format: str = ""
    notes: list[str] = field(default_factory=list)
    model: str = ""
    facts_from: str = ""
    per_gpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    """GPU kind (:func:`~pixart_batch.measured.gpu_kinds`) → (DiT + VAE, T5) GPU-seconds."""

    def per_gpu_dict(self) -> dict[str, dict[str, Any]]:
        """Every GPU kind's card, basis, GPU-hours (total, DiT + VAE, T5) and cost when priced."""
        price, rows = self.usd_per_gpu_hour, {}
        for kind, (dit_s, t5_s) in sorted(self.per_gpu.items()):
            hours, ref = (dit_s + t5_s) / 3600, figures(kind)
            usd = None if price is None else hours * price
            rows[kind] = {"card": ref["card"], "basis": ref["basis"], "gpu_hours": significant(hours)}
            rows[kind] |= {
                "gpu_hours_denoise_decode": significant(dit_s / 3600),
                "gpu_hours_t5": significant(t5_s / 3600),
            }
            rows[kind]["usd_total"] = None if usd is None else significant(usd)
            rows[kind]["usd_per_1000_images"] = _usd_per_1000(usd, self.images)
        return rows

    @property
    def gpu_hours(self) -> float:
        return (self.dit_gpu_seconds + self.t5_gpu_seconds) / 3600

    def usd(self) -> float | None:
        return None if self.usd_per_gpu_hour is None else self.gpu_hours * self.usd_per_gpu_hour

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pixart-batch plan --json``)."""
        usd = self.usd()
        return {
            "prompts": self.prompts,
            "images": self.images,
            "buckets_width_x_height": dict(
                sorted(self.buckets.items(), key=lambda item: (-item[1], item[0]))
            ),
            "model": self.model,
            "model_facts_from": self.facts_from,
            "gpu": self.gpu,
            "gpu_basis": figures(self.gpu)["basis"],
            "gpu_measurement": figures(self.gpu)["source"],
            "steps": self.steps,
            "gpu_hours": significant(self.gpu_hours),
            "gpu_hours_denoise_decode": significant(self.dit_gpu_seconds / 3600),
            "gpu_hours_t5": significant(self.t5_gpu_seconds / 3600),
            "usd_per_gpu_hour": self.usd_per_gpu_hour,
            "usd_total": None if usd is None else significant(usd),
            "usd_per_1000_images": _usd_per_1000(usd, self.images),
            "distinct_captions": self.distinct_captions,
            "mean_tokens": round(self.mean_tokens, 1),
            "token_sample": self.token_sample,
            "tokens_counted_by": self.tokens_counted_by,
            "store_bytes": int(self.store_bytes),
            "image_format": self.image_format,
            "output_bytes": int(self.output_bytes),
            "notes": self.notes,
            "per_gpu": self.per_gpu_dict(),
            **({"images_per_label": dict(sorted(self.labels.items()))} if self.labels else {}),
        }
