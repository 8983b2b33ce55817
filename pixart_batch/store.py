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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import schema as S
from .storage import Location, list_files, locate, read_bytes, write_bytes_atomic, write_parquet_atomic

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq


def caption_key(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:32]


def store_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            (S.CAPTION_KEY, pa.string()),
            (S.CAPTION, pa.string()),
            (S.NUM_TOKENS, pa.int32()),
            (S.TRUNCATED, pa.bool_()),
            (S.EMBEDDING, pa.binary()),
        ]
    )


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
        return {"encoder": self.encoder, "d_model": self.d_model, **{name: self.settings[name] for name in sorted(self.settings)}}

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

    def open(self) -> EmbeddingStore:
        """Create the store (or check an existing one has the same identity)."""
        meta = self.location.join("store.json")
        wanted = json.dumps(self.identity.as_dict(), sort_keys=True, indent=2)
        try:
            found = read_bytes(self.location, meta).decode()
        except (FileNotFoundError, OSError):
            write_bytes_atomic(self.location, meta, wanted.encode())
            return self
        if json.loads(found) != json.loads(wanted):
            from .errors import OutputError

            raise OutputError(f"{meta}: embedding store identity does not match its key; the store is damaged")
        return self

    def remove_temporaries(self) -> int:
        """Delete part files that crashed writers left half-written, an hour or more ago (a store
        shared by several outputs may have a live writer of another run); returns how many."""
        from .storage import remove_temporaries

        return remove_temporaries(self.location, self.location.path, older_than_s=3600)

    def part_files(self) -> list[str]:
        return list_files(self.location, self.location.join("parts"), suffix=".parquet")

    def write_part(self, table: pa.Table) -> str:
        """Commit one part file (rows sorted by key; returns its path)."""
        part_id = uuid.uuid4().hex
        path = self.location.join("parts", part_id[:2], f"part-{part_id}.parquet")
        table = table.select(store_schema().names).cast(store_schema()).sort_by(S.CAPTION_KEY)
        write_parquet_atomic(
            self.location,
            path,
            table,
            row_group_size=64,
            compression={
                S.CAPTION_KEY: "zstd",
                S.CAPTION: "zstd",
                S.NUM_TOKENS: "zstd",
                S.TRUNCATED: "zstd",
                S.EMBEDDING: "none",
            },
            use_dictionary=[S.CAPTION_KEY, S.CAPTION],
            write_statistics=[S.CAPTION_KEY, S.NUM_TOKENS],
        )
        return path

    def index(self) -> list[tuple[str, str, str]]:
        """``[(part path, smallest key, largest key)]`` from each part's footer statistics.

        Parts are written from captions sorted by key, so each covers a narrow key range and a
        lookup opens only the parts whose range holds a wanted key. Built once per run on the
        driver (O(parts) footers), handed to every lookup task.
        """
        entries = []
        for path in self.part_files():
            metadata = _footer(self.location, path)
            column = metadata.schema.to_arrow_schema().get_field_index(S.CAPTION_KEY)
            stats = [metadata.row_group(i).column(column).statistics for i in range(metadata.num_row_groups)]
            if stats and all(st is not None and st.has_min_max for st in stats):
                entries.append((path, min(st.min for st in stats), max(st.max for st in stats)))
            else:  # no statistics: always a candidate
                entries.append((path, "", "\uffff"))
        return entries

    def lookup(self, keys: Iterable[str], index: list[tuple[str, str, str]] | None = None) -> dict[str, dict[str, Any]]:
        """``{caption_key: {num_tokens, truncated, embedding}}`` for the given keys (all must exist).

        Reads only the parts, and within them the row groups, whose key range holds a wanted key.
        """
        import pyarrow.parquet as pq

        wanted = sorted(set(keys))
        found: dict[str, dict[str, Any]] = {}
        for path, low, high in self.index() if index is None else index:
            candidates = [k for k in wanted if low <= k <= high and k not in found]
            if not candidates:
                continue
            metadata = _footer(self.location, path)
            column = metadata.schema.to_arrow_schema().get_field_index(S.CAPTION_KEY)
            groups = []
            for i in range(metadata.num_row_groups):
                st = metadata.row_group(i).column(column).statistics
                if st is None or not st.has_min_max or any(st.min <= k <= st.max for k in candidates):
                    groups.append(i)
            if not groups:
                continue
            with self.location.fs.open_input_file(path) as handle:
                table = pq.ParquetFile(handle).read_row_groups(
                    groups, columns=[S.CAPTION_KEY, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING]
                )
            wanted_here = set(candidates)
            for row in table.to_pylist():
                key = row.pop(S.CAPTION_KEY)
                if key in wanted_here:
                    found[key] = row
        missing = [k for k in wanted if k not in found]
        if missing:
            raise KeyError(f"embedding store {self.uri} lacks {len(missing)} caption(s), e.g. {missing[0]}")
        return found


_FOOTERS: dict[tuple[str, str], pq.FileMetaData] = {}


def _footer(location: Location, path: str) -> pq.FileMetaData:
    """A part's Parquet footer; parts never change once committed, so each process reads it once."""
    import pyarrow.parquet as pq

    key = (location.uri, path)
    if key not in _FOOTERS:
        if len(_FOOTERS) >= 8192:
            _FOOTERS.clear()
        with location.fs.open_input_file(path) as handle:
            _FOOTERS[key] = pq.ParquetFile(handle).metadata
    return _FOOTERS[key]


class AttachEmbeddings:
    """CPU stage: adds the stored embeddings of each row's caption and negative caption."""

    def __init__(self, root: str, identity: StoreIdentity, index: list[tuple[str, str, str]], negatives: bool = True) -> None:
        self.store = EmbeddingStore(root, identity)
        self.index = index
        self.negatives = negatives
        """False when CFG is off (guidance <= 1): negative prompts are neither encoded nor attached."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = batch[S.CAPTION_KEY].tolist()
        negative_keys = batch[S.NEGATIVE_KEY].tolist() if self.negatives else []
        found = self.store.lookup(keys + negative_keys, self.index)
        batch[S.NUM_TOKENS] = np.array([found[k][S.NUM_TOKENS] for k in keys], dtype=np.int32)
        batch[S.TRUNCATED] = np.array([found[k][S.TRUNCATED] for k in keys], dtype=bool)
        batch[S.PROMPT_EMBEDDING] = np.array([found[k][S.EMBEDDING] for k in keys], dtype=object)
        if self.negatives:
            batch[S.NEGATIVE_NUM_TOKENS] = np.array([found[k][S.NUM_TOKENS] for k in negative_keys], dtype=np.int32)
            batch[S.NEGATIVE_EMBEDDING] = np.array([found[k][S.EMBEDDING] for k in negative_keys], dtype=object)
        else:
            batch[S.NEGATIVE_NUM_TOKENS] = np.zeros(len(keys), dtype=np.int32)
            batch[S.NEGATIVE_EMBEDDING] = np.array([b""] * len(keys), dtype=object)
        return batch
