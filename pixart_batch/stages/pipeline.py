"""The pipeline's order, defined once: the stages as the executors run them, phase by phase, each with
the columns it declares (:mod:`.columns`).

The staged prompt chunks (:func:`~pixart_batch.expansion.prompt_chunk`) are the source. The clean
phase cleans and sizes them; the encode phase and the generate phase each start from the cleaned
prompts: the captions into the store, then the images (the plan written from the expanded rows, the
embeddings read back from the store). ``tests/test_stage_columns.py`` checks that every column a stage
reads is made by the source or an earlier stage, under every combination of :data:`.columns.CONDITIONS`.

Steps between the stages that keep every column (the distinct-caption group-by, the anti-joins with
the store and the committed keys, the sorts) are not listed. The executors run
:class:`~.generate.DenoiseDecode` in place of the DiT and the VAE when those share an actor; its
columns are theirs chained.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .. import schema as S
from ..expansion import expand_images, prompt_chunk
from .columns import SCORED, Columns, Step, columns
from .decode import Decoder
from .denoise import Denoiser
from .encode import TextEncoder
from .rows import attach_embeddings, caption_rows, clean_and_size, encode_images, first_of_group
from .score import Scorer

WRITE_STORE = Step("write store", reads=columns(*S.STORE_COLUMNS, S.BUSY_COLUMNS["encode"]))
"""The encoded captions into store parts (:class:`pixart_batch.store.StoreWriter`)."""

PLAN_COLUMNS = (
    S.KEY,
    S.PROMPT_ID,
    S.IMAGE_INDEX,
    S.CAPTION_KEY,
    S.NEGATIVE_KEY,
    S.BUCKET_HEIGHT,
    S.BUCKET_WIDTH,
)
WRITE_PLAN = Step("write plan", reads=columns(*PLAN_COLUMNS, labelled=(S.LABEL, S.TEMPLATE)))
"""Every planned image into ``OUTPUT/plan/`` (:class:`pixart_batch.output.writers.PlanWriter`); the
rows go on to the generate phase."""


def _image_write_reads() -> Columns:
    """What :class:`~pixart_batch.output.writers.ImageWriter` reads: the row columns that are not the
    run's constants (:meth:`pixart_batch.spec.RunSpec.row_constants`), the image's bytes, each row's
    failure, and the counters it sums when they are there."""
    per_row = (
        *(S.KEY, S.PROMPT_ID, S.IMAGE_INDEX, S.PROMPT, S.CAPTION, S.NEGATIVE_PROMPT, S.NEGATIVE_CAPTION),
        *(S.SEED, S.SCHEDULER, S.NUM_TOKENS, S.TRUNCATED, S.WIDTH, S.HEIGHT, S.BUCKET_WIDTH, S.BUCKET_HEIGHT),
        *(S.SHA256, S.IMAGE_BYTES, S.ERROR, S.TRACEBACK),
    )
    counters = (*S.BUSY_COLUMNS.values(), S.STORE_BYTES_READ, S.STORE_BYTES_USED)
    scores = {"scored": (S.CLIP_SCORE,), "aesthetic_head": (S.AESTHETIC_SCORE,)}
    return columns(*per_row, labelled=(S.LABEL,), **scores, present=counters)


WRITE_IMAGES = Step("write images", reads=_image_write_reads(), keeps=False)
"""The made images into shards, the failed rows into the failures table
(:class:`pixart_batch.output.writers.ImageWriter`)."""


@dataclass(frozen=True)
class Phase:
    """One phase of a run: its stages in order, starting from the rows the phase ``after`` ends with
    (None: from nothing, its first stage is the source)."""

    name: str
    after: str | None
    stages: tuple[object, ...]
    only: tuple[tuple[object, str], ...] = ()
    """``(stage, condition)``: a stage that runs only under a condition of :data:`.columns.CONDITIONS`."""

    def runs(self, conditions: Collection[str]) -> tuple[object, ...]:
        """The stages that run where ``conditions`` hold, in order."""
        only = dict(self.only)
        return tuple(stage for stage in self.stages if only.get(stage, None) in (None, *conditions))


PIPELINE: tuple[Phase, ...] = (
    Phase("clean", None, (prompt_chunk, clean_and_size)),
    Phase("encode", "clean", (caption_rows, first_of_group, TextEncoder, WRITE_STORE)),
    Phase(
        "generate",
        "clean",
        (
            expand_images,
            WRITE_PLAN,
            attach_embeddings,
            Denoiser,
            Decoder,
            Scorer,
            encode_images,
            WRITE_IMAGES,
        ),
        only=((Scorer, SCORED),),
    ),
)
"""The run's phases in the order the executors run them."""
