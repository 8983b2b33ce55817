"""The embedding store: T5 outputs in Parquet, valid tokens only, keyed by what changes them.

Layout (``ROOT`` defaults to ``OUTPUT/embeddings``)::

    ROOT/<store_key>/store.json              identity: encoder hash, d_model, every embedding-role setting
    ROOT/<store_key>/parts/<hh>/part-<id>.parquet

``store_key`` hashes the identity, so a different encoder, dtype, token limit or
cleaning setting can never read stale vectors. Each row is one distinct cleaned
caption: ``caption_key`` (sha256 of the caption), ``caption``, ``num_tokens``,
``truncated`` and ``embedding`` — the raw bytes of ``num_tokens × d_model`` values in
the encoder's dtype (no padding, no compression: lossless and exactly sized).
Part files are committed atomically (:mod:`.storage`); ``<hh>`` spreads them over at
most 256 folders.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import schema as S
from .batches import concat
from .storage import Location, list_files, locate, read_bytes, write_bytes_atomic

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq


ROW_GROUP_BYTES = 256 * 1024
"""Embedding bytes per row group of new parts: PixArt's T5 (4096 × 2 bytes a token) puts one or a few
captions in a group, so a lookup reads about what it uses."""
MAX_ROW_GROUP_ROWS = 64
CACHE_BYTES = 256 * 1024 * 1024
"""Decoded row groups each process keeps (least recently used out first): neighbouring lookups of a
plan sorted by caption key, and the shared negative prompt, are read from storage once."""
IDENTITY_FILE = "store.json"
"""``ROOT/<store_key>/store.json``: the store's identity (what makes its folder a store)."""
LOOKUP_COLUMNS = (S.CAPTION_KEY, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING)


def caption_key(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class StoreIdentity:
    encoder: str
    """Hash of tokenizer + text-encoder files (:func:`pixart_batch.models.encoder_identity`)."""
    d_model: int
    """Width of a stored embedding (T5's ``d_model``)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Every config field whose role is ``embedding`` (:mod:`pixart_batch.spec`): token limit, cleaning,
    encoder dtype, quantization, ..."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "d_model": self.d_model,
            **{name: self.settings[name] for name in sorted(self.settings)},
        }

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


class EmbeddingStore:
    def __init__(self, root: str, identity: StoreIdentity) -> None:
        self.root = root
        self.identity = identity
        self.location: Location = locate(root).child(identity.key())

    @property
    def uri(self) -> str:
        return self.location.uri

    def check(self) -> bool:
        """Whether the store exists; refuses one whose identity does not match its key. Writes nothing."""
        meta = self.location.join(IDENTITY_FILE)
        try:
            found = read_bytes(self.location, meta).decode()
        except (FileNotFoundError, OSError):
            return False
        try:
            same = json.loads(found) == self.identity.as_dict()
        except ValueError:
            same = False
        if not same:
            from .errors import OutputError

            raise OutputError(
                f"{meta}: embedding store identity does not match its key; the store is damaged"
            )
        return True

    def open(self) -> EmbeddingStore:
        """Create the store (or check an existing one has the same identity)."""
        if not self.check():
            wanted = json.dumps(self.identity.as_dict(), sort_keys=True, indent=2)
            write_bytes_atomic(self.location, self.location.join(IDENTITY_FILE), wanted.encode())
        return self

    def remove_temporaries(self) -> int:
        """Delete part files that crashed writers left half-written, an hour or more ago (a store
        shared by several outputs may have a live writer of another run); returns how many."""
        from .storage import remove_temporaries

        return remove_temporaries(self.location, self.location.path, older_than_s=3600)

    def part_files(self) -> list[str]:
        return part_files(self.location)

    def write_part(self, table: pa.Table, row_group_bytes: int = ROW_GROUP_BYTES) -> str:
        """Commit one part file (rows sorted by key; returns its path).

        Row groups hold consecutive rows up to ``row_group_bytes`` of embeddings (at least one row, at
        most :data:`MAX_ROW_GROUP_ROWS`), so a lookup reads about the embeddings it uses. Parts written
        before this had 64-row groups; they read the same way.
        """
        from .storage import ParquetStreamWriter

        part_id = uuid.uuid4().hex
        path = self.location.join("parts", part_id[:2], f"part-{part_id}.parquet")
        table = table.select(S.store_schema().names).cast(S.store_schema()).sort_by(S.CAPTION_KEY)
        with ParquetStreamWriter(
            self.location,
            path,
            S.store_schema(),
            compression={
                S.CAPTION_KEY: "zstd",
                S.CAPTION: "zstd",
                S.NUM_TOKENS: "zstd",
                S.TRUNCATED: "zstd",
                S.EMBEDDING: "none",
            },
            use_dictionary=[S.CAPTION_KEY, S.CAPTION],
            write_statistics=[S.CAPTION_KEY, S.NUM_TOKENS],
        ) as writer:
            for start, stop in _row_groups(table, row_group_bytes):
                writer.write(table.slice(start, stop - start))
            writer.commit()
        return path

    def held_keys(self, keys: Iterable[str], index: list[tuple[str, str, str]] | None = None) -> set[str]:
        """Which of ``keys`` the store holds (:func:`held_keys`)."""
        return held_keys(self.location, keys, self.index() if index is None else index)

    def index(self) -> list[tuple[str, str, str]]:
        """``[(part path, smallest key, largest key)]`` (:func:`part_index`). Built once per run on the
        driver (O(parts) footers), handed to every lookup task."""
        return part_index(self.location)

    def lookup(
        self, keys: Iterable[str], index: list[tuple[str, str, str]] | None = None, reads: Reads | None = None
    ) -> dict[str, dict[str, Any]]:
        """``{caption_key: {num_tokens, truncated, embedding}}`` for the given keys (all must exist).

        Reads only the parts, and within them the row groups, whose key range holds a wanted key, and
        of those only the ones this process has not cached (:data:`CACHE_BYTES` of decoded row groups,
        least recently used out first). What it reads from storage is added to ``reads``.
        """
        import pyarrow.parquet as pq

        reads = reads if reads is not None else Reads()
        wanted = sorted(set(keys))
        found: dict[str, dict[str, Any]] = {}
        for path, low, high in self.index() if index is None else index:
            candidates = [k for k in wanted if low <= k <= high and k not in found]
            if not candidates:
                continue
            groups = _groups(self.location, path, reads)
            needed = sorted({i for k in candidates for i in groups.holding(k)})
            rows_here: dict[str, dict[str, Any]] = {}
            missing_groups = []
            for i in needed:
                cached = _CACHE.get((self.location.uri, path, i))
                if cached is None:
                    missing_groups.append(i)
                else:
                    rows_here.update(cached)
            if missing_groups:
                with self.location.fs.open_input_file(path) as handle:
                    parquet = pq.ParquetFile(handle, metadata=groups.metadata)
                    for i in missing_groups:
                        table = parquet.read_row_group(i, columns=list(LOOKUP_COLUMNS))
                        decoded = {row.pop(S.CAPTION_KEY): row for row in table.to_pylist()}
                        reads.bytes_read += groups.read_bytes[i]
                        reads.rows_read += table.num_rows
                        reads.groups_read += 1
                        _CACHE.put(
                            (self.location.uri, path, i),
                            decoded,
                            sum(len(r[S.EMBEDDING]) for r in decoded.values()),
                        )
                        rows_here.update(decoded)
            for key in candidates:
                if key in rows_here:
                    found[key] = rows_here[key]
        missing = [k for k in wanted if k not in found]
        if missing:
            raise KeyError(f"embedding store {self.uri} lacks {len(missing)} caption(s), e.g. {missing[0]}")
        reads.bytes_used += sum(len(found[k][S.EMBEDDING]) for k in wanted)
        reads.embeddings_used += len(wanted)
        return found


def part_files(location: Location) -> list[str]:
    """The part files of the store folder ``location`` (a store's keyed folder)."""
    return list_files(location, location.join("parts"), suffix=".parquet")


def part_index(location: Location) -> list[tuple[str, str, str]]:
    """``[(part path, smallest key, largest key)]`` from each part's footer statistics.

    Parts are written from captions sorted by key, so each covers a narrow key range and a lookup
    opens only the parts whose range holds a wanted key. A part whose footer cannot be read is always
    a candidate (its read fails where it is used)."""
    entries = []
    for path in part_files(location):
        try:
            metadata = _footer(location, path)
        except Exception:
            entries.append((path, "", "\uffff"))
            continue
        column = metadata.schema.to_arrow_schema().get_field_index(S.CAPTION_KEY)
        stats = [metadata.row_group(i).column(column).statistics for i in range(metadata.num_row_groups)]
        if stats and all(st is not None and st.has_min_max for st in stats):
            entries.append((path, min(st.min for st in stats), max(st.max for st in stats)))
        else:  # no statistics: always a candidate
            entries.append((path, "", "\uffff"))
    return entries


def held_keys(
    location: Location, keys: Iterable[str], index: list[tuple[str, str, str]] | None = None
) -> set[str]:
    """Which of ``keys`` the store folder ``location`` holds: only the parts whose key range holds a wanted
    key are read, and of them only the key column. A part that cannot be read holds none (``verify``
    names it, the next run sets it aside)."""
    import pyarrow.parquet as pq

    wanted = set(keys)
    ordered = sorted(wanted)
    found: set[str] = set()
    for path, low, high in part_index(location) if index is None else index:
        if not any(low <= key <= high for key in ordered):
            continue
        try:
            with location.fs.open_input_file(path) as handle:
                found.update(pq.read_table(handle, columns=[S.CAPTION_KEY]).column(0).to_pylist())
        except Exception:
            continue
    return found & wanted


def _row_groups(table: pa.Table, row_group_bytes: int) -> list[tuple[int, int]]:
    """``[(start, stop)]``: consecutive rows up to ``row_group_bytes`` of embeddings (≥ 1, ≤ 64 rows)."""
    import pyarrow.compute as pc

    sizes = pc.binary_length(table.column(S.EMBEDDING)).to_pylist()
    spans, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (total + (size or 0) > row_group_bytes or i - start >= MAX_ROW_GROUP_ROWS):
            spans.append((start, i))
            start, total = i, 0
        total += size or 0
    if start < len(sizes):
        spans.append((start, len(sizes)))
    return spans


@dataclass
class Reads:
    """What lookups read from storage (compressed column chunks of the row groups read, and footers)
    against the embedding bytes they returned (each lookup's distinct keys)."""

    bytes_read: int = 0
    bytes_used: int = 0
    rows_read: int = 0
    groups_read: int = 0
    embeddings_used: int = 0


@dataclass
class _Groups:
    """A part's row groups: key ranges (sorted, as the part is) and the bytes a lookup reads of each."""

    metadata: pq.FileMetaData
    mins: list[str]
    maxs: list[str]
    read_bytes: list[int]
    sorted_ranges: bool

    def holding(self, key: str) -> list[int]:
        """Row groups whose key range holds ``key``."""
        import bisect

        if self.sorted_ranges:
            i = bisect.bisect_right(self.mins, key) - 1
            return [i] if i >= 0 and key <= self.maxs[i] else []
        return [
            i for i, (low, high) in enumerate(zip(self.mins, self.maxs, strict=True)) if low <= key <= high
        ]


_GROUPS: dict[tuple[str, str], _Groups] = {}


def _groups(location: Location, path: str, reads: Reads | None = None) -> _Groups:
    """A part's :class:`_Groups`, from its footer (read once per process: parts never change)."""
    key = (location.uri, path)
    if key not in _GROUPS:
        metadata = _footer(location, path, reads)
        names = metadata.schema.to_arrow_schema().names
        key_column = names.index(S.CAPTION_KEY)
        columns = [names.index(name) for name in LOOKUP_COLUMNS]
        mins, maxs, sizes = [], [], []
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            st = group.column(key_column).statistics
            if st is None or not st.has_min_max:
                mins.append("")
                maxs.append("\uffff")
            else:
                mins.append(st.min)
                maxs.append(st.max)
            sizes.append(sum(group.column(j).total_compressed_size for j in columns))
        ordered = all(maxs[i] < mins[i + 1] for i in range(len(mins) - 1))
        if len(_GROUPS) >= 8192:
            _GROUPS.clear()
        _GROUPS[key] = _Groups(metadata, mins, maxs, sizes, ordered)
    return _GROUPS[key]


class RowGroupCache:
    """Decoded row groups, least recently used out first, at most ``limit`` embedding bytes in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.entries: OrderedDict[tuple[str, str, int], tuple[dict[str, dict[str, Any]], int]] = OrderedDict()

    def get(self, key: tuple[str, str, int]) -> dict[str, dict[str, Any]] | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple[str, str, int], rows: dict[str, dict[str, Any]], size: int) -> None:
        if key in self.entries:
            self.size -= self.entries.pop(key)[1]
        if size > self.limit:
            return
        self.entries[key] = (rows, size)
        self.size += size
        while self.size > self.limit:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.size -= dropped

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


_CACHE = RowGroupCache(CACHE_BYTES)
_FOOTERS: dict[tuple[str, str], pq.FileMetaData] = {}
"""This process's read caches, by ``(store uri, part path)``: parts never change once committed, so
their footers (:data:`_FOOTERS`), row-group key ranges (:data:`_GROUPS`) and decoded row groups
(:data:`_CACHE`) are read once; :func:`clear_caches` forgets them all."""


def clear_caches() -> None:
    """Forget every part footer, row-group index and decoded row group this process has cached, so the
    next lookup reads from storage again. A run never needs it (committed parts never change); tests
    call it to measure cold reads."""
    _CACHE.clear()
    _GROUPS.clear()
    _FOOTERS.clear()


def _footer(location: Location, path: str, reads: Reads | None = None) -> pq.FileMetaData:
    """A part's Parquet footer; parts never change once committed, so each process reads it once."""
    import pyarrow.parquet as pq

    key = (location.uri, path)
    if key not in _FOOTERS:
        if len(_FOOTERS) >= 8192:
            _FOOTERS.clear()
        with location.fs.open_input_file(path) as handle:
            _FOOTERS[key] = pq.ParquetFile(handle).metadata
        if reads is not None:
            reads.bytes_read += _FOOTERS[key].serialized_size + 8
    return _FOOTERS[key]


class AttachEmbeddings:
    """CPU stage: adds the stored embeddings of each row's caption and negative caption.

    Adds ``_store_bytes_read`` and ``_store_bytes_used`` (this batch's totals on its first row, 0 on
    the others): bytes read from storage, and embedding bytes of the batch's distinct keys.
    """

    def __init__(
        self, root: str, identity: StoreIdentity, index: list[tuple[str, str, str]], negatives: bool = True
    ) -> None:
        self.store = EmbeddingStore(root, identity)
        self.index = index
        self.negatives = negatives
        """False when CFG is off (guidance <= 1): negative prompts are neither encoded nor attached."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = batch[S.CAPTION_KEY].tolist()
        negative_keys = batch[S.NEGATIVE_KEY].tolist() if self.negatives else []
        reads = Reads()
        found = self.store.lookup(keys + negative_keys, self.index, reads)
        batch[S.NUM_TOKENS] = np.array([found[k][S.NUM_TOKENS] for k in keys], dtype=np.int32)
        batch[S.TRUNCATED] = np.array([found[k][S.TRUNCATED] for k in keys], dtype=bool)
        batch[S.PROMPT_EMBEDDING] = np.array([found[k][S.EMBEDDING] for k in keys], dtype=object)
        if self.negatives:
            batch[S.NEGATIVE_NUM_TOKENS] = np.array(
                [found[k][S.NUM_TOKENS] for k in negative_keys], dtype=np.int32
            )
            batch[S.NEGATIVE_EMBEDDING] = np.array(
                [found[k][S.EMBEDDING] for k in negative_keys], dtype=object
            )
        else:
            batch[S.NEGATIVE_NUM_TOKENS] = np.zeros(len(keys), dtype=np.int32)
            batch[S.NEGATIVE_EMBEDDING] = np.array([b""] * len(keys), dtype=object)
        for column, value in ((S.STORE_BYTES_READ, reads.bytes_read), (S.STORE_BYTES_USED, reads.bytes_used)):
            counts = np.zeros(len(keys), dtype=np.int64)
            if len(keys):
                counts[0] = value
            batch[column] = counts
        return batch


@dataclass
class StoreWriteResult:
    rows: int = 0
    busy_s: float = 0.0
    """Seconds the encode stage was busy with these rows."""

    def add(self, other: StoreWriteResult) -> None:
        self.rows += other.rows
        self.busy_s += other.busy_s


class StoreWriter:
    """Encoded captions into store part files of at most ``rows_per_part`` rows, each committed atomically
    (Ray-free: the Ray executor wraps it in a thin ``Datasink``)."""

    def __init__(self, root: str, identity: StoreIdentity, rows_per_part: int) -> None:
        self.root, self.identity, self.rows_per_part = root, identity, rows_per_part

    def write(self, batches: Iterable[dict[str, np.ndarray]], task: int) -> StoreWriteResult:
        import pyarrow as pa

        present = [batch for batch in batches if len(batch.get(S.CAPTION_KEY, ()))]
        if not present:
            return StoreWriteResult()
        store = EmbeddingStore(self.root, self.identity)
        batch = concat(present)
        total = len(batch[S.CAPTION_KEY])
        for start in range(0, total, self.rows_per_part):
            part = {
                name: batch[name][start : start + self.rows_per_part].tolist() for name in S.STORE_COLUMNS
            }
            store.write_part(pa.table(part))
        return StoreWriteResult(rows=total, busy_s=float(batch[S.BUSY_COLUMNS["encode"]].sum()))
