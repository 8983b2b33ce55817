"""The Ray-free batch functions between the model stages: clean and size the staged prompts, the
captions to encode, the store lookup that attaches embeddings, image encoding. Both executors call
them on their own batches (a Ray ``map_batches`` task, an in-memory batch). Each declares the columns
it reads and writes (:func:`~.columns.stage_columns`), as the model stages do."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import schema as S
from ..batches import Batch
from ..stopping import nothing
from .columns import columns, stage_columns
from .write import ImageEncoder

if TYPE_CHECKING:
    import pyarrow as pa

    from ..buckets import ModelGeometry
    from ..config import GenerationConfig
    from ..spec import CleanSpec
    from ..stopping import StopFlag
    from ..store import StoreIdentity


@stage_columns(
    reads=(S.PROMPT, S.NEGATIVE_PROMPT, S.REQUESTED_WIDTH, S.REQUESTED_HEIGHT, S.ASPECT_RATIO),
    writes=(
        S.CAPTION,
        S.NEGATIVE_CAPTION,
        S.CAPTION_KEY,
        S.NEGATIVE_KEY,
        S.EMPTY_CAPTION,
        S.LOST_PROMPT,
        S.WIDTH,
        S.HEIGHT,
        S.BUCKET_WIDTH,
        S.BUCKET_HEIGHT,
    ),
)
def clean_and_size(
    batch: Batch,
    spec: CleanSpec,
    generation: GenerationConfig,
    geometry: ModelGeometry,
    table: dict[str, list[float]],
) -> Batch:
    """Cleaned captions, their store keys, and the size plan of each staged prompt."""
    from ..expansion import add_sizes
    from ..store import caption_key
    from .clean import CaptionCleaner

    batch = CaptionCleaner(spec)(batch)
    batch[S.CAPTION_KEY] = np.array([caption_key(c) for c in batch[S.CAPTION]], dtype=object)
    batch[S.NEGATIVE_KEY] = np.array([caption_key(c) for c in batch[S.NEGATIVE_CAPTION]], dtype=object)
    batch[S.EMPTY_CAPTION] = np.array([not c for c in batch[S.CAPTION]], dtype=np.int64)
    pairs = zip(batch[S.PROMPT].tolist(), batch[S.CAPTION].tolist(), strict=True)
    batch[S.LOST_PROMPT] = np.array(
        [prompt if lost_text(prompt, caption) else "" for prompt, caption in pairs], dtype=object
    )
    return add_sizes(batch, generation, geometry, table)


def lost_text(prompt: str, caption: str) -> bool:
    """Whether cleaning removed most of a prompt's letters and digits: diffusers' PixArt cleaning keeps
    Latin letters, digits and some punctuation, and drops CJK and other scripts, URLs and HTML."""
    before = sum(char.isalnum() for char in prompt)
    return before >= 2 and 2 * sum(char.isalnum() for char in caption) < before


def lost_summary(lost: list[str]) -> tuple[int, str | None]:
    """``(count, example)`` of a :data:`~pixart_batch.schema.LOST_PROMPT` column's values."""
    found = [prompt for prompt in lost if prompt]
    return len(found), max(found) if found else None


@stage_columns(
    reads=columns(S.CAPTION_KEY, S.CAPTION, cfg=(S.NEGATIVE_KEY, S.NEGATIVE_CAPTION)),
    writes=(S.CAPTION_KEY, S.CAPTION),
    keeps=False,
)
def caption_rows(batch: Batch, negatives: bool) -> Batch:
    """Every caption a prompt needs encoded: its own and (with CFG on) its negative prompt's; a batch
    of these two columns only."""
    if not negatives:
        return {S.CAPTION_KEY: batch[S.CAPTION_KEY], S.CAPTION: batch[S.CAPTION]}
    return {
        S.CAPTION_KEY: np.concatenate([batch[S.CAPTION_KEY], batch[S.NEGATIVE_KEY]]),
        S.CAPTION: np.concatenate([batch[S.CAPTION], batch[S.NEGATIVE_CAPTION]]),
    }


@stage_columns(ImageEncoder.reads, ImageEncoder.writes, ImageEncoder.drops)
def encode_images(batch: Batch, image_format: str, quality: int) -> Batch:
    """The rows' pixels encoded as ``image_format`` (:class:`~.write.ImageEncoder`)."""
    return ImageEncoder(image_format, quality)(batch)


@stage_columns()
def first_of_group(table: pa.Table) -> pa.Table:
    """One row per caption key (the input of ``groupby(caption_key).map_groups``)."""
    return table.slice(0, 1)


@stage_columns(
    reads=columns(S.CAPTION_KEY, cfg=(S.NEGATIVE_KEY,)),
    writes=(
        S.NUM_TOKENS,
        S.TRUNCATED,
        S.PROMPT_EMBEDDING,
        S.NEGATIVE_NUM_TOKENS,
        S.NEGATIVE_EMBEDDING,
        S.STORE_BYTES_READ,
        S.STORE_BYTES_USED,
    ),
)
def attach_embeddings(
    batch: Batch,
    root: str,
    identity: StoreIdentity,
    index: list,
    negatives: bool,
    stop: StopFlag,
) -> Batch:
    """The rows' embeddings from the store (without CFG the negative columns are empty placeholders);
    no rows once the run is stopping (:mod:`pixart_batch.stopping`)."""
    from ..store import AttachEmbeddings

    if stop.requested():
        return nothing(batch)
    return AttachEmbeddings(root, identity, index, negatives)(batch)
