"""Column names and the Arrow / ``datasets`` schemas built from them, in one place. Rows move
between stages as dicts of columns (numpy batches)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Features

# Prompt level (after reading and cleaning).
PROMPT_ID = "prompt_id"
PROMPT = "prompt"
NEGATIVE_PROMPT = "negative_prompt"
CAPTION = "caption"
NEGATIVE_CAPTION = "negative_caption"
WIDTH = "width"
HEIGHT = "height"

# Staged prompt chunks (the requested size; 0 = not given) and where a prompt came from.
REQUESTED_WIDTH = "requested_width"
REQUESTED_HEIGHT = "requested_height"
ASPECT_RATIO = "aspect_ratio"
SOURCE = "source"

# Embedding store.
CAPTION_KEY = "caption_key"
NEGATIVE_KEY = "negative_key"
NUM_TOKENS = "num_tokens"
TRUNCATED = "truncated"
EMBEDDING = "embedding"

# Image level.
KEY = "key"
IMAGE_INDEX = "image_index"
SEED = "seed"
STEPS = "num_inference_steps"
GUIDANCE = "guidance_scale"
TIMESTEPS = "timesteps"
MODEL = "model"
BUCKET_WIDTH = "bucket_width"
BUCKET_HEIGHT = "bucket_height"
DTYPE = "dtype"
MAX_SEQ_LEN = "max_sequence_length"
SCHEDULER = "scheduler"
SHA256 = "sha256"
IMAGE = "image"
IMAGE_FORMAT = "image_format"
FAST_MODE = "fast_mode"
"""``exact``, or the DiT's opt-in approximations (``stages.denoise.step_cache`` / ``fp8``)."""
LABEL = "label"
"""The class id of a labelled prompt (int64; a ``datasets`` ``ClassLabel`` over the output's label names)."""
LABEL_NAMES_SETTING = "output.label_names"
"""The settings key (``settings.json``, every shard) of a labelled output's class names, in id order."""
LABEL_NAME = "label_name"
"""WebDataset ``KEY.json`` only: the class name beside its id."""
TEMPLATE = "template"
"""Staged prompts of a class × template file: the template's index in the file (-1: none)."""
CLIP_SCORE = "clip_score"
"""float32: 100 × cosine similarity of the CLIP image and text embeddings (``stages.score``; absent
when off)."""
AESTHETIC_SCORE = "aesthetic_score"
"""float32: a linear head over the CLIP image embedding (``stages.score.aesthetic_head``; absent
without one)."""
SCORE_SETTING = "score"
"""The settings key of the scoring model's identity (``pixart_batch.score_model``); absent when not scored."""

EMPTY_CAPTION = "_empty"
"""1 where a prompt's caption cleaned to empty text (clean phase only, never written)."""
LOST_PROMPT = "_lost"
"""The prompt where cleaning removed most of its letters and digits, else "" (clean phase only, never
written)."""
RUN = "run"
"""The failures table's run id column."""

# Failures: "" for a healthy row, else "<stage>: <Exception>: <message>"; the traceback beside it.
ERROR = "error"
TRACEBACK = "traceback"

# Transient columns between the DiT, VAE and encode stages (never written).
PROMPT_EMBEDDING = "prompt_embedding"
NEGATIVE_EMBEDDING = "negative_embedding"
NEGATIVE_NUM_TOKENS = "negative_num_tokens"
LATENTS = "latents"
PIXELS = "pixels"
IMAGE_BYTES = "image_bytes"
"""The encoded image (PNG/JPEG/WebP bytes), before it becomes the row's ``image`` struct."""
STORE_BYTES_READ = "_store_bytes_read"
STORE_BYTES_USED = "_store_bytes_used"
"""Counters the store lookup adds to each batch (summed into each write task's result)."""
BUSY_COLUMNS = {
    "encode": "_busy_encode_s",
    "denoise": "_busy_denoise_s",
    "decode": "_busy_decode_s",
    "score": "_busy_score_s",
    "write": "_busy_write_s",
}
"""Per stage: the transient column of seconds each row's batch kept that stage busy."""

# Columns of a dataset row, in order (``image`` last, as users expect it in viewers).
OUTPUT_COLUMNS = (
    KEY,
    PROMPT_ID,
    IMAGE_INDEX,
    PROMPT,
    CAPTION,
    NEGATIVE_PROMPT,
    NEGATIVE_CAPTION,
    SEED,
    STEPS,
    GUIDANCE,
    TIMESTEPS,
    MODEL,
    SCHEDULER,
    DTYPE,
    MAX_SEQ_LEN,
    NUM_TOKENS,
    TRUNCATED,
    WIDTH,
    HEIGHT,
    BUCKET_WIDTH,
    BUCKET_HEIGHT,
    IMAGE_FORMAT,
    FAST_MODE,
    SHA256,
    IMAGE,
)

ADDED_COLUMNS = frozenset({FAST_MODE})
"""Columns added after the first release: shards written before them lack them (``verify`` accepts that)."""


def bucket_name(width: int, height: int) -> str:
    """An aspect bucket's name, ``WIDTHxHEIGHT`` (as ``status``, the report, the plan and the gallery
    show it)."""
    return f"{int(width)}x{int(height)}"


SHARD_SETTINGS_KEY = b"pixart_batch.settings"
"""Parquet key-value metadata of every shard (or key index): the settings its images were made with (JSON)."""


def failure_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            (KEY, pa.string()),
            (PROMPT_ID, pa.string()),
            (IMAGE_INDEX, pa.int32()),
            (ERROR, pa.string()),
            (TRACEBACK, pa.string()),
            (RUN, pa.string()),
        ]
    )


def plan_schema(labelled: bool = False) -> pa.Schema:
    """The plan's rows (with ``label`` and ``template`` columns for a labelled run)."""
    import pyarrow as pa

    return pa.schema(
        [
            (KEY, pa.string()),
            (PROMPT_ID, pa.string()),
            (IMAGE_INDEX, pa.int32()),
            (CAPTION_KEY, pa.string()),
            (NEGATIVE_KEY, pa.string()),
            (BUCKET_HEIGHT, pa.int32()),
            (BUCKET_WIDTH, pa.int32()),
        ]
        + ([(LABEL, pa.int64()), (TEMPLATE, pa.int32())] if labelled else [])
    )


STORE_COLUMNS = (CAPTION_KEY, CAPTION, NUM_TOKENS, TRUNCATED, EMBEDDING)


def store_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            (CAPTION_KEY, pa.string()),
            (CAPTION, pa.string()),
            (NUM_TOKENS, pa.int32()),
            (TRUNCATED, pa.bool_()),
            (EMBEDDING, pa.binary()),
        ]
    )


def label_names(settings: dict[str, Any] | None) -> list[str] | None:
    """The class names a run's settings record (None: an unlabelled output)."""
    names = (settings or {}).get(LABEL_NAMES_SETTING)
    return list(names) if names is not None else None


def output_columns(labelled: bool) -> tuple[str, ...]:
    """The row's columns: :data:`OUTPUT_COLUMNS`, with ``label`` before ``image`` for a labelled output."""
    return (*OUTPUT_COLUMNS[:-1], LABEL, IMAGE) if labelled else OUTPUT_COLUMNS


def score_columns(settings: dict[str, Any] | None) -> tuple[str, ...]:
    """The score columns of an output's rows, from its settings (none when it is not scored)."""
    score = (settings or {}).get(SCORE_SETTING)
    if not score:
        return ()
    return (CLIP_SCORE, AESTHETIC_SCORE) if score.get("aesthetic_head") else (CLIP_SCORE,)


def row_columns(settings: dict[str, Any] | None) -> tuple[str, ...]:
    """The columns of an output's rows: :data:`OUTPUT_COLUMNS` with the optional score columns (before
    ``sha256``) and ``label`` (before ``image``) its settings call for."""
    base = (*OUTPUT_COLUMNS[:-2], *score_columns(settings), *OUTPUT_COLUMNS[-2:])
    return (*base[:-1], LABEL, IMAGE) if label_names(settings) is not None else base


def features(names: list[str] | None = None, extra: tuple[str, ...] = ()) -> Features:
    """The datasets ``Features`` of an image row (``image`` last): ``label`` a ``ClassLabel`` over ``names``
    when given, ``extra`` the optional score columns."""
    from datasets import ClassLabel, Features, Image, Sequence, Value

    types = {
        KEY: Value("string"),
        PROMPT_ID: Value("string"),
        IMAGE_INDEX: Value("int32"),
        PROMPT: Value("string"),
        CAPTION: Value("string"),
        NEGATIVE_PROMPT: Value("string"),
        NEGATIVE_CAPTION: Value("string"),
        SEED: Value("int64"),
        STEPS: Value("int32"),
        GUIDANCE: Value("float32"),
        TIMESTEPS: Sequence(Value("int32")),
        MODEL: Value("string"),
        SCHEDULER: Value("string"),
        DTYPE: Value("string"),
        MAX_SEQ_LEN: Value("int32"),
        NUM_TOKENS: Value("int32"),
        TRUNCATED: Value("bool"),
        WIDTH: Value("int32"),
        HEIGHT: Value("int32"),
        BUCKET_WIDTH: Value("int32"),
        BUCKET_HEIGHT: Value("int32"),
        IMAGE_FORMAT: Value("string"),
        FAST_MODE: Value("string"),
        SHA256: Value("string"),
        IMAGE: Image(),
    }
    assert tuple(types) == OUTPUT_COLUMNS
    scores = {name: Value("float32") for name in extra if name in (CLIP_SCORE, AESTHETIC_SCORE)}
    order = (
        *OUTPUT_COLUMNS[:-2],
        *scores,
        *OUTPUT_COLUMNS[-2:-1],
        *((LABEL,) if names is not None else ()),
        IMAGE,
    )
    label = {LABEL: ClassLabel(names=names)} if names is not None else {}
    return Features({name: scores.get(name) or label.get(name) or types[name] for name in order})


def with_settings(schema: pa.Schema, settings: dict[str, Any] | None) -> pa.Schema:
    """``schema`` with the run's settings in its metadata (:data:`SHARD_SETTINGS_KEY`) when given."""
    if settings is None:
        return schema
    recorded = json.dumps(settings, sort_keys=True).encode()
    return schema.with_metadata({**(schema.metadata or {}), SHARD_SETTINGS_KEY: recorded})


def shard_schema(settings: dict[str, Any] | None = None) -> pa.Schema:
    """The Arrow schema of a shard: the datasets features (the score columns and ``label`` its settings
    call for), and the run's settings in the metadata."""
    return with_settings(features(label_names(settings), score_columns(settings)).arrow_schema, settings)


def key_index_schema(settings: dict[str, Any] | None = None) -> pa.Schema:
    """A key file of a format whose shards are not Parquet: one ``key`` column, the settings in the
    metadata."""
    import pyarrow as pa

    return with_settings(pa.schema([(KEY, pa.string())]), settings)
