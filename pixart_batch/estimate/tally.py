"""The plan's one pass over the prompts: each prompt sized the way the run sizes it
(:func:`~pixart_batch.expansion.choose_size`), counted per bucket and label, its captions fed to the
store's size (:mod:`.sizes`); then priced per GPU kind (:mod:`.cost`) and the notes on what the
estimate cannot model for this config."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .. import schema as S
from ..measured import (
    BYTES_PER_PIXEL,
    DTYPE_BYTES,
    REFERENCE_DIT_LAYERS,
    REFERENCE_DIT_WIDTH,
    gpu_kinds,
)
from .cost import check_gpu, seconds_per_image, t5_seconds
from .facts import CheckpointFacts, checkpoint_facts
from .report import Estimate
from .sizes import DistinctCaptions, StoredTexts, count_tokens

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..prompts import Prompts


def estimate_run(config: RunConfig, prompts: Prompts, facts: CheckpointFacts | None = None) -> Estimate:
    """Count per bucket, price and size a run of ``config`` over ``prompts`` (see
    :mod:`pixart_batch.estimate`)."""
    from functools import lru_cache

    from ..buckets import ModelGeometry, aspect_ratio_table
    from ..expansion import choose_size
    from ..prompts import PromptRecord, count_records, iter_prompts, scan_prompts
    from ..spec import CleanSpec
    from ..stages.clean import CaptionCleaner

    ref = check_gpu(config.estimate.gpu)
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
    cleaner = CaptionCleaner(CleanSpec(config.model.clean_caption, facts.pipeline_class))
    distinct = DistinctCaptions()
    texts = StoredTexts(distinct, cleaner if not config.model.clean_caption else None)
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
            negative = record.negative_prompt
            texts.add_negative(negative if negative is not None else generation.negative_prompt)
    texts.flush()
    result.prompts, result.images = scan.count, scan.count * per_prompt
    result.buckets = Counter({S.bucket_name(w, h): count for (w, h), count in buckets.items()})
    result.output_pixels = pixels
    _price(result, buckets, scan.count, facts, generation.num_inference_steps)

    sample = distinct.sample()
    captions = (cleaner.clean(sample) if config.model.clean_caption else sample) if sample else []
    result.mean_tokens, result.tokens_counted_by = count_tokens(captions, facts)
    result.token_sample = len(sample)
    result.distinct_captions = distinct.count()
    dtype_bytes = DTYPE_BYTES[config.stages.encode.dtype]
    result.store_bytes = result.distinct_captions * result.mean_tokens * facts.text_dim * dtype_bytes
    result.output_bytes = pixels * BYTES_PER_PIXEL[config.output.image_format]
    result.notes = [*facts.notes, *_notes(config, facts, ref), *([counted.describe()] if counted else [])]
    return result


def _price(result: Estimate, buckets: Counter, prompts: int, facts: CheckpointFacts, steps: int) -> None:
    """``result``'s GPU-seconds per GPU kind (DiT + VAE over ``buckets``' images, T5 over ``prompts``)
    and those of its chosen kind."""
    for kind in gpu_kinds():
        result.per_gpu[kind] = (
            sum(count * seconds_per_image(kind, h, w, steps) for (w, h), count in buckets.items()),
            t5_seconds(kind, prompts, facts.max_sequence_length),
        )
    result.dit_gpu_seconds, result.t5_gpu_seconds = result.per_gpu[result.gpu]


def _notes(config: RunConfig, facts: CheckpointFacts, ref: dict[str, Any]) -> list[str]:
    """What the estimate cannot model for this config, one note each."""
    notes = []
    denoise = config.stages.denoise
    if config.model.path == "tiny":
        recipe = (
            "this GPU recipe's buckets and costs need its own model"
            if denoise.num_gpus
            else "not a published checkpoint"
        )
        notes.append(
            f"this plans the tiny test model (random weights, small buckets): {recipe} "
            "(model.path or --model HUB_ID)"
        )
    if denoise.num_gpus == 0:
        notes.append(
            "this recipe runs on CPU (stages.denoise.num_gpus 0): the estimate is for one "
            f"{ref['card']} ({config.estimate.gpu}) running the same images"
        )
    if (facts.dit_width, facts.dit_layers) != (REFERENCE_DIT_WIDTH, REFERENCE_DIT_LAYERS):
        notes.append(
            f"this checkpoint's DiT ({facts.dit_layers} layers, width {facts.dit_width}) is not "
            "PixArt-XL-2 (28, 1152): the estimate is for PixArt-XL-2 at the same buckets"
        )
    if not facts.uses_negative:
        notes.append(
            "guidance_scale <= 1 (no CFG): measured with CFG; kept as an upper bound "
            "(no CFG-free run was measured)"
        )
    if denoise.dtype != ref["dtype"]:
        notes.append(f"stages.denoise.dtype is {denoise.dtype}; the measurement is {ref['dtype']}")
    return notes
