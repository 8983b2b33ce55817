"""Planning: prompts × images_per_prompt → one row per image with its key, seed and bucket.

Seeds derive from (run seed, prompt id, image index) only, so an image never depends
on batch size, actor count, or whether the run was resumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .buckets import ModelGeometry, bucket_for
from .config import GenerationConfig
from .prompts import PromptRecord

MAX_IMAGES_PER_PROMPT = 100_000


def image_seed(run_seed: int, prompt_id: str, image_index: int) -> int:
    """A 63-bit seed for one image (``torch.Generator("cpu").manual_seed(seed)``)."""
    digest = hashlib.sha256(f"{run_seed}\x00{prompt_id}\x00{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def image_key(prompt_id: str, image_index: int) -> str:
    """Stable, unique, dot-free key: ``<prompt_id>-<image_index:05d>``."""
    return f"{prompt_id}-{image_index:05d}"


@dataclass(frozen=True)
class SizePlan:
    height: int
    """Final image height (what was asked for)."""
    width: int
    bucket_height: int
    """The aspect-ratio bin the DiT generates at."""
    bucket_width: int


def plan_size(record: PromptRecord, generation: GenerationConfig, geometry: ModelGeometry, table: dict) -> SizePlan:
    """Requested size → bucket, by diffusers' ``classify_height_width_bin``.

    ``--hw``/width+height: exact size, generated at its bucket and resized back;
    ``--ar``: the bin nearest the ratio, generated and kept at the bin's size;
    nothing: the config's default size, else the model's native square.
    """
    if record.width is not None and record.height is not None:
        height, width = record.height, record.width
    elif record.aspect_ratio is not None:
        height, width = bucket_for(record.aspect_ratio, 1.0, table)
    elif generation.width is not None and generation.height is not None:
        height, width = generation.height, generation.width
    else:
        height = width = geometry.native_size
    bucket_height, bucket_width = bucket_for(height, width, table)
    return SizePlan(int(height), int(width), bucket_height, bucket_width)
