"""The plan's sizes: the embedding store and the images, in bounded memory.

The embedding store keeps each distinct caption's valid tokens once: ``distinct captions × mean
tokens × d_model × dtype bytes`` (T5's ``d_model`` from the checkpoint, the encode stage's dtype).
Distinct captions are the prompts' and the negative prompts' texts, counted by 64-bit digest
(:class:`DistinctCaptions`); with ``model.clean_caption: false`` the exact captions (lowercased and
stripped), with cleaning on the raw texts (cleaning only merges texts: an upper bound). Tokens are
counted with the checkpoint's own tokenizer on the cleaned text of a uniform sample of up to
:data:`TOKEN_SAMPLE` distinct captions (the padding to a batch's longest caption is not stored).
Image sizes use :data:`~pixart_batch.measured.BYTES_PER_PIXEL`, documented constants for
photographic content (not measured here: random weights make noise images, which compress unlike
real ones).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from array import array
from typing import Any

from .facts import CheckpointFacts

TOKEN_SAMPLE = 2000
"""Prompts sampled (uniformly, fixed seed) for counting tokens."""


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


class StoredTexts:
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


def count_tokens(captions: list[str], facts: CheckpointFacts) -> tuple[float, str]:
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
        how = f"approximated as characters/4 + 1 (tokenizer not loaded: {reason})"
        return sum(lengths) / len(lengths), how
