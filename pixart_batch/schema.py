"""Column names, in one place. Rows move between stages as dicts of columns (numpy batches)."""

from __future__ import annotations

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

# Failures: "" for a healthy row, else "<stage>: <Exception>: <message>"; the traceback beside it.
ERROR = "error"
TRACEBACK = "traceback"

# Transient columns between the DiT, VAE and encode stages (never written).
PROMPT_EMBEDDING = "prompt_embedding"
NEGATIVE_EMBEDDING = "negative_embedding"
NEGATIVE_NUM_TOKENS = "negative_num_tokens"
LATENTS = "latents"
PIXELS = "pixels"

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
    """An aspect bucket's name, ``WIDTHxHEIGHT`` (as ``status``, the report, the plan and the gallery show it)."""
    return f"{int(width)}x{int(height)}"
