"""``pixart-batch plan``: what a run will make and cost, before anything starts (no Ray, no models).

Streams the prompt file twice (:func:`~pixart_batch.prompts.scan_prompts` validates it, then
:func:`~pixart_batch.prompts.iter_prompts` sizes each prompt the way the run plans it,
:func:`~pixart_batch.expansion.choose_size`), so memory stays flat for millions of prompts: it keeps
the per-bucket counts, 8 bytes per caption for counting distinct captions
(:class:`DistinctCaptions`), a sample of up to :data:`TOKEN_SAMPLE` distinct captions for counting
tokens, and the 8 bytes per prompt of the scan's duplicate-id check.

One module per question:

- :mod:`.facts`: what the plan reads of the checkpoint (:class:`CheckpointFacts`: its configs, or
  the shipped facts of a published checkpoint when the hub cannot be reached);
- :mod:`.cost`: the cost model, GPU seconds per image from the measured figures
  (:func:`seconds_per_image`; the formula and what it leaves out are in its docstring);
- :mod:`.sizes`: the embedding store's and the images' sizes (distinct captions, tokens);
- :mod:`.tally`: the pass over the prompts that counts, prices and sizes (:func:`estimate_run`);
- :mod:`.report` and :mod:`.text`: the result (:class:`Estimate`), its JSON form and its table
  (:func:`format_estimate`).
"""

from __future__ import annotations

from ..measured import BYTES_PER_PIXEL, MEASURED, REFERENCE_DIT_WIDTH, gpu_kinds
from .cost import check_gpu, seconds_per_image, t5_seconds
from .facts import CheckpointFacts, checkpoint_facts, facts_of, shipped_checkpoint_facts
from .report import Estimate, significant
from .sizes import TOKEN_SAMPLE, DistinctCaptions, StoredTexts, count_tokens
from .tally import estimate_run
from .text import fixed, format_estimate, size_text

__all__ = [
    "BYTES_PER_PIXEL",  # the measured figures, re-exported
    "MEASURED",
    "REFERENCE_DIT_WIDTH",
    "TOKEN_SAMPLE",
    "CheckpointFacts",
    "DistinctCaptions",
    "Estimate",
    "StoredTexts",
    "check_gpu",
    "checkpoint_facts",
    "count_tokens",
    "estimate_run",
    "facts_of",
    "fixed",
    "format_estimate",
    "gpu_kinds",
    "seconds_per_image",
    "shipped_checkpoint_facts",
    "significant",
    "size_text",
    "t5_seconds",
]
