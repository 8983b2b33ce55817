"""Pass 1 of the gallery: one streaming read of the small columns of every row (key, bucket, label,
scores, the columns ``--where`` names; never the images, captions or prompts), one row group at a time.

It counts images per bucket and label (and what ``--where`` keeps of each), keeps a bounded sample of
the scores (whole row groups: those whose hash is smallest, at most :data:`SCORE_ROWS` rows) and picks
the images to show: per *stratum* (a bucket, a label, kept / dropped by ``--where``) the ``per_page``
rows of smallest rank, a rank being ``(sha256 of the row group, sha256 of the key)``. So the images of
a page come from a few row groups (the ones with the smallest hashes that hold rows of it): the second
pass, which reads image bytes, reads those row groups only. A key is hashed only where its row group
could still enter a stratum's sample, so most rows of a large output cost a dict lookup or two.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import schema as S
from ..output.formats import OutputFormat

if TYPE_CHECKING:
    import numpy as np

    from ..expr import Where

SCORE_COLUMNS = (S.CLIP_SCORE, S.AESTHETIC_SCORE)
SCORE_ROWS = 1_000_000
"""Rows whose scores the plots use at most (whole row groups, those of smallest hash): 4 bytes a score."""

Bucket = tuple[int, int]
Stratum = tuple[str, Any]
"""``("bucket", (width, height))``, ``("label", id)`` or ``("where", kept)``: what a page shows."""
Rank = tuple[int, int]
_Entry = tuple[int, int, str, int, int, Bucket, Any, Any]
"""A sampled row in a stratum's max-heap: ``(-group hash, -key hash, key, shard, group, bucket, label,
kept)``."""


@dataclass
class Card:
    """A shown image: what pass 1 knows of it (where it is, its strata), then pass 2's columns."""

    key: str
    rank: Rank = (0, 0)
    shard: int = 0
    group: int = 0
    bucket: Bucket | None = None
    label: int | None = None
    kept: bool | None = None
    """Whether ``--where`` keeps the row (None: no ``--where``)."""
    prompt: str = ""
    caption: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    thumb: str | None = None
    """Path of the thumbnail relative to ``gallery/`` (None: the image did not decode)."""


@dataclass
class Scores:
    """The scores pass 1 kept (row groups of smallest hash, :data:`SCORE_ROWS` rows at most)."""

    rows: int
    labels: np.ndarray
    """The rows' label ids (int32; -1: none)."""
    values: dict[str, np.ndarray]
    """Per score column, float32, NaN where a row has none."""


@dataclass
class Scan:
    """Everything pass 1 found."""

    rows: int = 0
    buckets: Counter[Bucket] = field(default_factory=Counter)
    labels: Counter[int] = field(default_factory=Counter)
    kept: Counter[Stratum] = field(default_factory=Counter)
    """Rows ``--where`` keeps per stratum (``("bucket", b)`` / ``("label", id)``; ``("all", None)``)."""
    selected: dict[Stratum, list[Card]] = field(default_factory=dict)
    """Per stratum, its sampled rows in rank order (one :class:`Card` per key, shared between strata)."""
    scores: Scores | None = None
    skipped: list[str] = field(default_factory=list)
    failed_committed: set[str] = field(default_factory=set)
    """Keys of the failure files that the shards hold after all (retried)."""


def rank_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


def group_hash(shard: str, group: int) -> int:
    """A row group's hash: its shard's path under ``data/`` and its number (the same on every run)."""
    return rank_hash(f"{shard}#{group}")


class _Part:
    """What one shard adds (merged into the :class:`Scan` only once the whole shard has read)."""

    def __init__(self) -> None:
        self.rows = 0
        self.buckets: Counter[Bucket] = Counter()
        self.labels: Counter[int] = Counter()
        self.kept: Counter[Stratum] = Counter()
        self.heaps: dict[Stratum, list[_Entry]] = {}
        self.groups: list[tuple[int, np.ndarray, dict[str, np.ndarray]]] = []
        self.failed: set[str] = set()


class Sampler:
    """Pass 1 over the shards of ``output_format`` (see the module's docstring)."""

    def __init__(
        self,
        output_format: OutputFormat,
        per_page: int,
        scores: tuple[str, ...] = (),
        labelled: bool = False,
        where: Where | None = None,
        failed: Iterable[str] = (),
    ) -> None:
        self.format, self.per_page, self.where = output_format, per_page, where
        self.score_names, self.labelled = scores, labelled
        self.failed = frozenset(failed)
        wanted = [S.KEY, S.BUCKET_WIDTH, S.BUCKET_HEIGHT, *scores, *((S.LABEL,) if labelled else ())]
        self.columns = sorted({*wanted, *(where.columns if where else ())})
        self.heaps: dict[Stratum, list[_Entry]] = {}
        self.score_heap: list[tuple[int, int, np.ndarray, dict[str, np.ndarray]]] = []
        self.score_rows = 0
        self.scan = Scan()

    def run(self, shards: list[str]) -> Scan:
        prefix = self.format.data_path()
        for index, path in enumerate(shards):
            part = _Part()
            name = path[len(prefix) :].lstrip("/") if path.startswith(prefix) else path
            try:
                columns = self.format.readable_columns(path, self.columns)
                for group, rows in self.format.row_groups(path, columns):
                    self._group(part, index, group, group_hash(name, group), rows)
            except Exception:  # a damaged shard: verify names it, the next run sets it aside
                self.scan.skipped.append(path)
                continue
            self._merge(part)
        return self._finish()

    def _group(self, part: _Part, shard: int, group: int, ghash: int, rows: Iterator[dict[str, Any]]) -> None:
        """One row group: its rows counted per (bucket, label, kept), their scores kept, and the rows of
        the strata still open to this group offered to their samples (only those keys are hashed)."""
        combos: Counter[tuple[Bucket, Any, Any]] = Counter()
        open_combos: dict[tuple[Bucket, Any, Any], list[Stratum]] = {}
        labels: list[int] = []
        values: dict[str, list[float]] = {name: [] for name in self.score_names}
        matches = self.where.matches if self.where is not None else None
        failed = self.failed
        for row in rows:
            label = row.get(S.LABEL)
            bucket = (int(row[S.BUCKET_WIDTH]), int(row[S.BUCKET_HEIGHT]))
            combo = (bucket, label, bool(matches(row)) if matches else None)
            combos[combo] += 1
            strata = open_combos.get(combo)
            if strata is None:
                strata = open_combos[combo] = [s for s in _strata(combo) if self._open(part, s, ghash)]
            if strata:
                key = row[S.KEY]
                entry = (-ghash, -rank_hash(key), key, shard, group, *combo)
                for stratum in strata:
                    _offer(part.heaps.setdefault(stratum, []), entry, self.per_page)
            if failed and row[S.KEY] in failed:
                part.failed.add(row[S.KEY])
            if values:
                labels.append(-1 if label is None else int(label))
                for name, found in values.items():
                    value = row.get(name)
                    found.append(value if type(value) is float else _number(value))
        for (bucket, label, kept), count in combos.items():
            part.rows += count
            part.buckets[bucket] += count
            if label is not None:
                part.labels[label] += count
            if kept:
                part.kept.update(dict.fromkeys(_strata((bucket, label, None)) + [("all", None)], count))
        if labels:  # 4 bytes a label and a score from here on
            import numpy as np

            scores = {name: np.asarray(found, dtype=np.float32) for name, found in values.items()}
            part.groups.append((ghash, np.asarray(labels, dtype=np.int32), scores))

    def _open(self, part: _Part, stratum: Stratum, ghash: int) -> bool:
        """Whether rows of the group ``ghash`` can still enter ``stratum``'s sample (its heaps not full,
        or their worst row in a group of larger hash)."""
        for heap in (self.heaps.get(stratum), part.heaps.get(stratum)):
            if heap is not None and len(heap) >= self.per_page and -heap[0][0] < ghash:
                return False
        return True

    def _merge(self, part: _Part) -> None:
        scan = self.scan
        scan.rows += part.rows
        scan.buckets.update(part.buckets)
        scan.labels.update(part.labels)
        scan.kept.update(part.kept)
        scan.failed_committed |= part.failed
        for stratum, entries in part.heaps.items():
            heap = self.heaps.setdefault(stratum, [])
            for entry in entries:
                _offer(heap, entry, self.per_page)
        for ghash, labels, values in part.groups:
            heapq.heappush(self.score_heap, (-ghash, len(self.score_heap), labels, values))
            self.score_rows += len(labels)
            while self.score_rows > SCORE_ROWS and len(self.score_heap) > 1:
                self.score_rows -= len(heapq.heappop(self.score_heap)[2])

    def _finish(self) -> Scan:
        import numpy as np

        scan, cards = self.scan, dict[str, Card]()
        order = sorted(self.heaps, key=_stratum_order)
        for stratum in order:
            chosen = []
            for entry in sorted(self.heaps[stratum], reverse=True):
                neg_g, neg_k, key, shard, group, bucket, label, kept = entry
                card = cards.get(key) or Card(key, (-neg_g, -neg_k), shard, group, bucket, label, kept)
                cards[key] = card
                chosen.append(card)
            scan.selected[stratum] = chosen
        if self.score_names:
            groups = sorted(self.score_heap, key=lambda entry: -entry[0])  # the smallest group hash first
            labels = np.concatenate([np.zeros(0, np.int32), *(entry[2] for entry in groups)])
            empty = np.zeros(0, np.float32)
            values = {}
            for name in self.score_names:
                values[name] = np.concatenate([empty, *(entry[3][name] for entry in groups)])
            scan.scores = Scores(len(labels), labels, values)
        return scan


def _strata(combo: tuple[Bucket, Any, Any]) -> list[Stratum]:
    """The strata of a row of ``(bucket, label, kept)`` (no label, no ``--where``: fewer)."""
    bucket, label, kept = combo
    found: list[Stratum] = [("bucket", bucket)]
    if label is not None:
        found.append(("label", label))
    if kept is not None:
        found.append(("where", kept))
    return found


def _number(value: Any) -> float:
    """A score as a float (NaN where it is missing or not a finite number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def _stratum_order(stratum: Stratum) -> tuple[int, Any]:
    kinds = {"bucket": 0, "label": 1, "where": 2}
    kind, value = stratum
    return kinds[kind], (not value) if kind == "where" else value


def _offer(heap: list[_Entry], entry: _Entry, size: int) -> None:
    """Keep the ``size`` smallest ranks (a max-heap of negated ranks)."""
    if len(heap) >= size and entry[:2] <= heap[0][:2]:
        return
    if any(other[2] == entry[2] for other in heap):
        return  # the same key twice (never in a healthy output)
    if len(heap) < size:
        heapq.heappush(heap, entry)
    else:
        heapq.heapreplace(heap, entry)


def hand_out(selected: dict[Stratum, list[Card]], per_page: int, max_images: int) -> dict[str, Card]:
    """The shown cards: ``max_images`` handed out rank by rank across the strata (buckets, then labels,
    then kept / dropped), so every page gets its first images first; by key, in hand-out order."""
    shown: dict[str, Card] = {}
    for rank in range(per_page):
        for cards in selected.values():
            if len(shown) >= max_images:
                return shown
            if rank < len(cards):
                shown.setdefault(cards[rank].key, cards[rank])
    return shown
