"""Planning: prompts × images_per_prompt → one row per image with its key, seed and bucket.

Seeds derive from (run seed, prompt id, image index) only, so an image never depends
on batch size, actor count, or whether the run was resumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import schema as S
from .buckets import ModelGeometry, bucket_for
from .config import GenerationConfig
from .prompts import PromptRecord
from .stages.columns import columns, stage_columns

if TYPE_CHECKING:
    import pyarrow as pa


def image_seed(run_seed: int, prompt_id: str, image_index: int) -> int:
    """A 63-bit seed for one image (``torch.Generator("cpu").manual_seed(seed)``)."""
    digest = hashlib.sha256(f"{run_seed}\x00{prompt_id}\x00{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def image_key(prompt_id: str, image_index: int) -> str:
    """Stable, unique, dot-free key: ``<prompt_id>-<image_index:05d>``."""
    return f"{prompt_id}-{image_index:05d}"


@dataclass(frozen=True)
class ChosenSize:
    height: int
    """Final image height (what was asked for)."""
    width: int
    bucket_height: int
    """The aspect-ratio bin the DiT generates at."""
    bucket_width: int


def choose_size(
    record: PromptRecord, generation: GenerationConfig, geometry: ModelGeometry, table: dict
) -> ChosenSize:
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
    return ChosenSize(int(height), int(width), bucket_height, bucket_width)


# --------------------------------------------------------------------------- batch forms (run in Ray workers)


@stage_columns(
    writes=columns(
        S.PROMPT_ID,
        S.PROMPT,
        S.NEGATIVE_PROMPT,
        S.REQUESTED_WIDTH,
        S.REQUESTED_HEIGHT,
        S.ASPECT_RATIO,
        S.SOURCE,
        labelled=(S.LABEL, S.TEMPLATE),
    ),
    keeps=False,
)
def prompt_chunk(
    records: list[PromptRecord], default_negative: str, label_ids: dict[str, int] | None = None
) -> pa.Table:
    """An Arrow table of staged prompts, the source of the pipeline's rows (the negative prompt default
    already applied; 0 in a size column means "not given"); with ``label_ids`` (a labelled run) each
    record's class id and template index (-1: none)."""
    import pyarrow as pa

    labelled = {}
    if label_ids is not None:
        labelled = {
            S.LABEL: pa.array([label_ids[r.label] for r in records if r.label is not None], pa.int64()),
            S.TEMPLATE: pa.array([-1 if r.template is None else r.template for r in records], pa.int32()),
        }
    return pa.table(
        {
            S.PROMPT_ID: [r.prompt_id for r in records],
            S.PROMPT: [r.prompt for r in records],
            S.NEGATIVE_PROMPT: [
                r.negative_prompt if r.negative_prompt is not None else default_negative for r in records
            ],
            S.REQUESTED_WIDTH: pa.array([r.width or 0 for r in records], pa.int32()),
            S.REQUESTED_HEIGHT: pa.array([r.height or 0 for r in records], pa.int32()),
            S.ASPECT_RATIO: pa.array([r.aspect_ratio or 0.0 for r in records], pa.float64()),
            S.SOURCE: [r.source for r in records],
            **labelled,
        }
    )


@stage_columns(
    reads=(S.REQUESTED_WIDTH, S.REQUESTED_HEIGHT, S.ASPECT_RATIO),
    writes=(S.WIDTH, S.HEIGHT, S.BUCKET_WIDTH, S.BUCKET_HEIGHT),
)
def add_sizes(batch: dict, generation: GenerationConfig, geometry: ModelGeometry, table: dict) -> dict:
    """Adds ``width``, ``height``, ``bucket_width``, ``bucket_height`` to a batch of staged prompts."""
    import numpy as np

    sizes = []
    for width, height, ratio in zip(
        batch[S.REQUESTED_WIDTH], batch[S.REQUESTED_HEIGHT], batch[S.ASPECT_RATIO], strict=True
    ):
        record = PromptRecord("", "", None, int(width) or None, int(height) or None, float(ratio) or None, "")
        sizes.append(choose_size(record, generation, geometry, table))
    batch[S.WIDTH] = np.array([s.width for s in sizes], dtype=np.int32)
    batch[S.HEIGHT] = np.array([s.height for s in sizes], dtype=np.int32)
    batch[S.BUCKET_WIDTH] = np.array([s.bucket_width for s in sizes], dtype=np.int32)
    batch[S.BUCKET_HEIGHT] = np.array([s.bucket_height for s in sizes], dtype=np.int32)
    return batch


@stage_columns(
    reads=(S.PROMPT_ID,),
    writes=(S.IMAGE_INDEX, S.KEY, S.SEED, S.ERROR),
    drops=(S.REQUESTED_WIDTH, S.REQUESTED_HEIGHT, S.ASPECT_RATIO),
)
def expand_images(batch: dict, images_per_prompt: int, run_seed: int) -> dict:
    """One row per image: each prompt row repeated ``images_per_prompt`` times with its key and seed
    (every column but the requested size passed on, repeated)."""
    import numpy as np

    count = len(batch[S.PROMPT_ID])
    repeat = np.repeat(np.arange(count), images_per_prompt)
    out = {
        name: column[repeat]
        for name, column in batch.items()
        if name not in (S.REQUESTED_WIDTH, S.REQUESTED_HEIGHT, S.ASPECT_RATIO)
    }
    indices = np.tile(np.arange(images_per_prompt, dtype=np.int32), count)
    ids = out[S.PROMPT_ID].tolist()
    out[S.IMAGE_INDEX] = indices
    out[S.KEY] = np.array([image_key(p, int(i)) for p, i in zip(ids, indices, strict=True)], dtype=object)
    out[S.SEED] = np.array(
        [image_seed(run_seed, p, int(i)) for p, i in zip(ids, indices, strict=True)], dtype=np.int64
    )
    out[S.ERROR] = np.array([""] * len(ids), dtype=object)
    return out
