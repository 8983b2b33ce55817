"""``pixart-batch plan``: what a run will make and cost, before anything starts (no Ray, no models).

Streams the prompt file twice (:func:`~pixart_batch.prompts.scan_prompts` validates it, then
:func:`~pixart_batch.prompts.iter_prompts` sizes each prompt the way the run plans it,
:func:`~pixart_batch.expansion.choose_size`), so memory stays flat for millions of prompts: it keeps
the per-bucket counts, 8 bytes per caption for counting distinct captions
(:class:`DistinctCaptions`), a sample of up to :data:`TOKEN_SAMPLE` distinct captions for counting
tokens, and the 8 bytes per prompt of the scan's duplicate-id check.

**Seconds per image** come from :data:`MEASURED`, numbers this project measured, or for a card not
measured yet from :data:`~pixart_batch.measured.SCALED` (a measured card's times × a stated factor,
labelled "scaled"); the plan prices every kind. An image in bucket ``H × W`` with ``steps`` steps costs::

    dit_s × (steps / ref_steps) × f(N) / f(N_ref)   +   vae_s × (H·W) / (H_ref·W_ref)

``N`` is the DiT's token count ``(H / 16) · (W / 16)`` (VAE factor 8 × patch 2) and ``f(N) =
N · (28·d + 4·N)`` the FLOPs of one transformer block per image up to a constant, *attention
included*: per token 28·d² for the linear layers (self-attention q/k/v/o 8·d², cross-attention q/o
4·d², MLP 16·d², multiply-adds counted twice) and 4·N·d for self-attention's two N×N products,
with ``d = 1152`` (PixArt-XL-2). Cross-attention over ≤ 300 text tokens is left out (< 3 % at
1024²). ``dit_s`` is the measured time per image minus the measured VAE decode time (so it
includes the scheduler and CFG batching overhead); ``vae_s`` scales with pixels (a conv net).
T5 is priced separately at the measured prompts/s, scaled linearly with ``max_sequence_length``
over the measured 120 tokens (an upper bound: the run pads to a batch's longest caption).

Not modelled: runs without CFG (``guidance_scale`` ≤ 1; none measured: the CFG figure is kept, an
upper bound), other dtypes than the measurement's, multi-GPU overheads, cards with no figure.

**Sizes.** The embedding store keeps each distinct caption's valid tokens once: ``distinct
captions × mean tokens × d_model × dtype bytes`` (T5's ``d_model`` from the checkpoint, the encode
stage's dtype). Distinct captions are the prompts' and the negative prompts' texts, counted by
64-bit digest; with ``model.clean_caption: false`` the exact captions (lowercased and stripped),
with cleaning on the raw texts (cleaning only merges texts: an upper bound). Tokens are counted with
the checkpoint's own tokenizer on the cleaned text of a uniform sample of up to 2,000 distinct
captions (the padding to a batch's longest caption is not stored). Image sizes use
:data:`BYTES_PER_PIXEL`, documented constants for photographic content (not measured here: random
weights make noise images, which compress unlike real ones).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import schema as S
from .checkpoint_facts import COMPARED, shipped_facts
from .errors import CheckpointError, HubUnavailableError, UserError, shorten
from .measured import (
    BYTES_PER_PIXEL,
    DTYPE_BYTES,
    MEASURED,
    REFERENCE_DIT_LAYERS,
    REFERENCE_DIT_WIDTH,
    figures,
    gpu_kinds,
)

if TYPE_CHECKING:
    from .config import RunConfig
    from .prompts import Prompts
    from .spec import RunSpec

__all__ = [
    "BYTES_PER_PIXEL",
    "MEASURED",
    "REFERENCE_DIT_WIDTH",
    "gpu_kinds",
]  # the measured figures, re-exported

TOKEN_SAMPLE = 2000
"""Prompts sampled (uniformly, fixed seed) for counting tokens."""


def _check_gpu(gpu: str) -> dict[str, Any]:
    if gpu not in gpu_kinds():
        raise UserError(f"estimate.gpu: unknown GPU kind {gpu!r} (known: {', '.join(gpu_kinds())})")
    return figures(gpu)


def _dit_flops(tokens: int, width: int = REFERENCE_DIT_WIDTH) -> float:
    """One DiT block's FLOPs per image, up to a constant: linear layers plus self-attention."""
    return tokens * (28 * width + 4 * tokens)


def seconds_per_image(gpu: str, height: int, width: int, steps: int) -> float:
    """Estimated GPU seconds for one image of bucket ``height × width`` (see the module docstring)."""
    ref = _check_gpu(gpu)
    dit_s = ref["s_per_image"] - ref["vae_s_per_image"]
    tokens, ref_tokens = (height // 16) * (width // 16), (ref["height"] // 16) * (ref["width"] // 16)
    dit = dit_s * steps / ref["steps"] * _dit_flops(tokens) / _dit_flops(ref_tokens)
    vae = ref["vae_s_per_image"] * height * width / (ref["height"] * ref["width"])
    return dit + vae


# --------------------------------------------------------------------------- the checkpoint's configs


@dataclass(frozen=True)
class CheckpointFacts:
    """What the estimate reads from a checkpoint: geometry, family, DiT width, tokenizer folder."""

    name: str
    sample_size: int
    vae_scale_factor: int
    text_dim: int
    dit_width: int
    dit_layers: int
    pipeline_class: str
    max_sequence_length: int
    tokenizer: Path | None
    uses_negative: bool = True
    """Whether the run encodes negative prompts (CFG on: ``RunSpec.uses_negative``)."""
    source: str = "the checkpoint's configs"
    notes: tuple[str, ...] = ()  # what the plan says about where the facts came from


def checkpoint_facts(config: RunConfig) -> CheckpointFacts:
    """The checkpoint's component configs (``model.components_from`` for the ones it lacks), read
    through the run's own spec from the configs only (:meth:`RunSpec.build` with ``weights=False``).
    A published hub checkpoint the hub cannot give (offline, no network) is planned from the facts
    the project ships (:data:`~pixart_batch.checkpoint_facts.PUBLISHED`); when the hub answers, its
    configs win and any disagreement with the shipped facts is noted."""
    from .spec import RunSpec

    shipped = _shipped_facts(config)
    try:
        facts = facts_of(RunSpec.build(config, weights=False))
    except HubUnavailableError as exc:
        if shipped is None:
            raise
        reason = (
            "HF_HUB_OFFLINE is set"
            if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0")
            else str(exc)
        )
        return replace(
            shipped,
            notes=(f"the hub was not reached ({shorten(reason, 160)}): planned from the shipped facts",),
        )
    if shipped is not None:
        differ = [
            f"{key} {getattr(shipped, key)} → {getattr(facts, key)}"
            for key in COMPARED
            if getattr(shipped, key) != getattr(facts, key)
        ]
        if differ:
            note = f"{facts.name}: the hub's configs differ from the shipped facts ({', '.join(differ)}); the hub's are used"
            facts = replace(facts, notes=(note,))
    return facts


def _shipped_facts(config: RunConfig) -> CheckpointFacts | None:
    row = shipped_facts(config.model.path, config.model.components_from)
    if row is None:
        return None
    return CheckpointFacts(
        name=config.model.path,
        **{key: row[key] for key in COMPARED},
        max_sequence_length=config.model.max_sequence_length or row["max_sequence_length"],
        tokenizer=None,
        uses_negative=config.generation.guidance_scale > 1.0,
        source="the shipped facts of the published checkpoint, pixart_batch/checkpoint_facts.py",
    )


def facts_of(spec: RunSpec) -> CheckpointFacts:
    """What the estimate needs of a run spec's checkpoint."""
    where = spec.model.checkpoint_of("transformer").local_dir / "transformer" / "config.json"
    try:
        transformer = json.loads(where.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{spec.model.name}: not a PixArt checkpoint (no readable transformer/config.json: {exc})"
        ) from None
    tokenizer = spec.model.checkpoint_of("tokenizer").local_dir / "tokenizer"
    return CheckpointFacts(
        name=spec.config.model.path,
        sample_size=spec.geometry.sample_size,
        vae_scale_factor=spec.geometry.vae_scale_factor,
        text_dim=spec.geometry.text_dim,
        dit_width=int(transformer.get("num_attention_heads", 16))
        * int(transformer.get("attention_head_dim", 72)),
        dit_layers=int(transformer.get("num_layers", REFERENCE_DIT_LAYERS)),
        pipeline_class=spec.family.pipeline_class,
        max_sequence_length=spec.max_sequence_length,
        tokenizer=tokenizer if tokenizer.is_dir() else None,
        uses_negative=spec.uses_negative,
    )


# --------------------------------------------------------------------------- the estimate


@dataclass
class Estimate:
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
    """GPU kind (:func:`gpu_kinds`) → (DiT + VAE, T5) GPU-seconds."""

    def per_gpu_dict(self) -> dict[str, dict[str, Any]]:
        price, rows = self.usd_per_gpu_hour, {}
        for kind, (dit_s, t5_s) in sorted(self.per_gpu.items()):
            hours, ref = (dit_s + t5_s) / 3600, figures(kind)
            usd = None if price is None else hours * price
            rows[kind] = {"card": ref["card"], "basis": ref["basis"], "gpu_hours": _sig(hours)}
            rows[kind] |= {"gpu_hours_denoise_decode": _sig(dit_s / 3600), "gpu_hours_t5": _sig(t5_s / 3600)}
            rows[kind]["usd_total"] = None if usd is None else _sig(usd)
            rows[kind]["usd_per_1000_images"] = (
                None if usd is None or not self.images else _sig(usd / self.images * 1000)
            )
        return rows

    @property
    def gpu_hours(self) -> float:
        return (self.dit_gpu_seconds + self.t5_gpu_seconds) / 3600

    def usd(self) -> float | None:
        return None if self.usd_per_gpu_hour is None else self.gpu_hours * self.usd_per_gpu_hour

    def to_dict(self) -> dict[str, Any]:
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
            "gpu_hours": _sig(self.gpu_hours),
            "gpu_hours_denoise_decode": _sig(self.dit_gpu_seconds / 3600),
            "gpu_hours_t5": _sig(self.t5_gpu_seconds / 3600),
            "usd_per_gpu_hour": self.usd_per_gpu_hour,
            "usd_total": None if usd is None else _sig(usd),
            "usd_per_1000_images": None if usd is None or not self.images else _sig(usd / self.images * 1000),
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


def _size_text(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def format_estimate(estimate: Estimate) -> str:
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
    price = data["usd_per_gpu_hour"]
    cost = (
        f"at ${fixed(price, 3, 2)}/GPU-hour"
        if price is not None
        else "no price given (estimate.usd_per_gpu_hour or --usd-per-gpu-hour)"
    )
    lines += [
        "",
        f"GPU-hours (DiT + VAE, T5) and cost at {data['steps']} step{'s' * (data['steps'] != 1)} per GPU kind, {cost}",
    ]
    for kind, row in data["per_gpu"].items():
        hours = [fixed(row[key]) for key in ("gpu_hours", "gpu_hours_denoise_decode", "gpu_hours_t5")]
        usd = (
            ""
            if row["usd_total"] is None
            else f"  ${fixed(row['usd_total'], 3, 2)} total, ${fixed(row['usd_per_1000_images'], 3, 2)} per 1,000 images"
        )
        chosen = "  (estimate.gpu)" if kind == estimate.gpu else ""
        lines.append(
            f"{kind:<6}{row['card']:<17}{row['basis']:<10}{hours[0]} GPU-hours ({hours[1]}, {hours[2]}){usd}{chosen}"
        )
    lines.append(
        f"embedding store: at most {_size_text(data['store_bytes'])} ({data['distinct_captions']:,} distinct captions, "
        f"mean {data['mean_tokens']} tokens over {data['token_sample']:,} sampled, {data['tokens_counted_by']})"
    )
    lines.append(f"images ({data['image_format']}): about {_size_text(data['output_bytes'])}")
    lines.extend(f"{kind} ({figures(kind)['basis']}): {figures(kind)['source']}" for kind in data["per_gpu"])
    return "\n".join(lines)


def fixed(x: float, significant: int = 4, min_decimals: int = 0) -> str:
    """``x`` in fixed notation with about ``significant`` significant digits (``0.0007693``, ``12.35``,
    ``1,235``): the plan's one number style (never ``5.866e-05``)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:.{min_decimals}f}"
    decimals = min(max(min_decimals, significant - 1 - math.floor(math.log10(abs(x)))), 12)
    return f"{x:,.{decimals}f}"


def _sig(x: float, significant: int = 4) -> float:
    return float(f"{x:.{significant}g}")  # the JSON's figures, shown whole by the text


def _count_tokens(captions: list[str], facts: CheckpointFacts) -> tuple[float, str]:
    """Mean stored tokens per caption (valid tokens incl. EOS, capped at the limit) and how counted."""
    if not captions:
        return 0.0, "no prompts"
    try:
        if facts.tokenizer is None:
            raise OSError(
                "planned offline" if "shipped" in facts.source else "the checkpoint has no tokenizer/ folder"
            )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(facts.tokenizer))
        lengths = [
            min(len(ids), facts.max_sequence_length)
            for ids in tokenizer(captions, add_special_tokens=True).input_ids
        ]
        return sum(lengths) / len(lengths), "the checkpoint's tokenizer"
    except Exception as exc:  # noqa: BLE001 - no tokenizer: a documented approximation instead
        # T5's SentencePiece vocabulary averages about 4 characters of English per token (+1 for EOS).
        lengths = [min(math.ceil(len(c) / 4) + 1, facts.max_sequence_length) for c in captions]
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return sum(lengths) / len(
            lengths
        ), f"approximated as characters/4 + 1 (tokenizer not loaded: {reason})"


class DistinctCaptions:
    """The distinct captions of a stream in bounded memory: 8 bytes per caption added (its 64-bit
    BLAKE2b digest in a compact array, counted once at the end) and a uniform sample of up to
    ``sample_size`` distinct captions — those with the smallest digests (a bottom-k sample), so a
    caption repeated a thousand times is no likelier to be drawn than one given once."""

    def __init__(self, sample_size: int = TOKEN_SAMPLE) -> None:
        self.sample_size = sample_size
        self._digests = array("Q")
        self._heap: list[tuple[int, str]] = []  # (-digest, caption): the largest kept digest on top
        self._kept: set[int] = set()

    def add(self, caption: str) -> None:
        digest = _digest_of(caption)
        self._digests.append(digest)
        if digest in self._kept:
            return
        if len(self._heap) < self.sample_size:
            heapq.heappush(self._heap, (-digest, caption))
        elif digest < -self._heap[0][0]:
            dropped, _ = heapq.heapreplace(self._heap, (-digest, caption))
            self._kept.discard(-dropped)
        else:
            return
        self._kept.add(digest)

    def count(self) -> int:
        import numpy as np

        return int(np.unique(np.frombuffer(self._digests, dtype=np.uint64)).size) if len(self._digests) else 0

    def sample(self) -> list[str]:
        """The sampled captions, smallest digest first (deterministic for a given file)."""
        return [caption for _, caption in sorted(self._heap, reverse=True)]


def _digest_of(caption: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(caption.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


def estimate_run(config: RunConfig, prompts: Prompts, facts: CheckpointFacts | None = None) -> Estimate:
    """Count per bucket, price and size a run of ``config`` over ``prompts`` (see the module docstring)."""
    from functools import lru_cache

    from .buckets import ModelGeometry, aspect_ratio_table
    from .expansion import choose_size
    from .prompts import PromptRecord, count_records, iter_prompts, scan_prompts
    from .spec import CleanSpec

    ref = _check_gpu(config.estimate.gpu)
    counted = count_records(prompts)  # a class file's records, counted unexpanded (refused over the limit)
    scan = scan_prompts(prompts)
    facts = facts or checkpoint_facts(config)
    geometry = ModelGeometry(facts.sample_size, facts.vae_scale_factor, 4, facts.text_dim)
    table = aspect_ratio_table(facts.sample_size)
    generation = config.generation

    @lru_cache(maxsize=4096)
    def size_of(width: int | None, height: int | None, ratio: float | None) -> tuple[int, int, int, int]:
        plan = choose_size(PromptRecord("", "", None, width, height, ratio, ""), generation, geometry, table)
        return plan.bucket_width, plan.bucket_height, plan.width, plan.height

    result = Estimate(
        gpu=config.estimate.gpu,
        usd_per_gpu_hour=config.estimate.usd_per_gpu_hour,
        steps=generation.num_inference_steps,
        image_format=config.output.image_format,
        model=config.model.path,
        facts_from=facts.source,
    )
    from .stages.clean import CaptionCleaner

    cleaner = CaptionCleaner(CleanSpec(config.model.clean_caption, facts.pipeline_class))
    distinct = DistinctCaptions()
    texts = _StoredTexts(distinct, cleaner if not config.model.clean_caption else None)
    default_negative = generation.negative_prompt
    per_prompt = generation.images_per_prompt
    buckets: Counter = Counter()
    pixels = 0
    for record in iter_prompts(prompts, scan):
        bucket_width, bucket_height, width, height = size_of(record.width, record.height, record.aspect_ratio)
        buckets[(bucket_width, bucket_height)] += per_prompt
        if record.label is not None:
            result.labels[record.label] += per_prompt
        pixels += width * height * per_prompt
        texts.add(record.prompt)
        if facts.uses_negative:
            texts.add_negative(
                record.negative_prompt if record.negative_prompt is not None else default_negative
            )
    texts.flush()
    result.prompts, result.images = scan.count, scan.count * per_prompt
    result.buckets = Counter({S.bucket_name(w, h): count for (w, h), count in buckets.items()})
    result.output_pixels = pixels
    for kind in gpu_kinds():
        kind_ref = figures(kind)
        result.per_gpu[kind] = (
            sum(
                count * seconds_per_image(kind, h, w, generation.num_inference_steps)
                for (w, h), count in buckets.items()
            ),
            scan.count / kind_ref["t5_prompts_per_s"] * facts.max_sequence_length / kind_ref["t5_tokens"],
        )
    result.dit_gpu_seconds, result.t5_gpu_seconds = result.per_gpu[result.gpu]

    sample = distinct.sample()
    captions = (cleaner.clean(sample) if config.model.clean_caption else sample) if sample else []
    result.mean_tokens, result.tokens_counted_by = _count_tokens(captions, facts)
    result.token_sample = len(sample)
    result.distinct_captions = distinct.count()
    dtype_bytes = DTYPE_BYTES[config.stages.encode.dtype]
    result.store_bytes = result.distinct_captions * result.mean_tokens * facts.text_dim * dtype_bytes
    result.output_bytes = pixels * BYTES_PER_PIXEL[config.output.image_format]
    result.notes = [*facts.notes, *_notes(config, facts, ref), *([counted.describe()] if counted else [])]
    return result


class _StoredTexts:
    """Feeds :class:`DistinctCaptions` the texts the store is keyed by. With ``model.clean_caption:
    false`` the caption is the prompt lowercased and stripped, cheap enough to compute for every
    prompt (through ``cleaner``, in batches, exactly as the run does); with cleaning on, the raw
    texts are counted (cleaning only merges texts, so the count is an upper bound)."""

    BATCH = 1024

    def __init__(self, distinct: DistinctCaptions, cleaner: Any) -> None:
        self.distinct, self.cleaner = distinct, cleaner
        self.pending: list[str] = []
        self.last_negative: str | None = None

    def add(self, text: str) -> None:
        if self.cleaner is None:
            self.distinct.add(text)
            return
        self.pending.append(text)
        if len(self.pending) >= self.BATCH:
            self.flush()

    def add_negative(self, text: str) -> None:
        """Negatives are mostly the run's one default: a text equal to the previous one is skipped."""
        if text != self.last_negative:
            self.last_negative = text
            self.add(text)

    def flush(self) -> None:
        if self.pending:
            for caption in self.cleaner.clean(self.pending):
                self.distinct.add(caption)
            self.pending = []


def _notes(config: RunConfig, facts: CheckpointFacts, ref: dict[str, Any]) -> list[str]:
    notes = []
    denoise = config.stages.denoise
    if config.model.path == "tiny":
        recipe = (
            "this GPU recipe's buckets and costs need its own model"
            if denoise.num_gpus
            else "not a published checkpoint"
        )
        notes.append(
            f"this plans the tiny test model (random weights, small buckets): {recipe} (model.path or --model HUB_ID)"
        )
    if denoise.num_gpus == 0:
        notes.append(
            f"this recipe runs on CPU (stages.denoise.num_gpus 0): the estimate is for one {ref['card']} ({config.estimate.gpu}) "
            "running the same images"
        )
    if (facts.dit_width, facts.dit_layers) != (REFERENCE_DIT_WIDTH, REFERENCE_DIT_LAYERS):
        notes.append(
            f"this checkpoint's DiT ({facts.dit_layers} layers, width {facts.dit_width}) is not PixArt-XL-2 (28, 1152): "
            "the estimate is for PixArt-XL-2 at the same buckets"
        )
    if not facts.uses_negative:
        notes.append(
            "guidance_scale <= 1 (no CFG): measured with CFG; kept as an upper bound (no CFG-free run was measured)"
        )
    if denoise.dtype != ref["dtype"]:
        notes.append(f"stages.denoise.dtype is {denoise.dtype}; the measurement is {ref['dtype']}")
    return notes
