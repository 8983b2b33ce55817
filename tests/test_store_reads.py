"""Embedding-store lookups: exact bytes back, small row groups, a bounded cache, read accounting."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixart_batch import schema as S
from pixart_batch import store as store_module
from pixart_batch.storage import write_parquet_atomic
from pixart_batch.store import (
    ROW_GROUP_BYTES,
    AttachEmbeddings,
    EmbeddingStore,
    Reads,
    RowGroupCache,
    StoreIdentity,
    caption_key,
)

IDENTITY = StoreIdentity(encoder="test", d_model=64, settings={"max_sequence_length": 120})


@pytest.fixture(autouse=True)
def _cold_caches():
    store_module.clear_caches()
    yield
    store_module.clear_caches()


def rows(captions: list[str], d_model: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(10, 121, len(captions))
    return pa.table(
        {
            S.CAPTION_KEY: [caption_key(c) for c in captions],
            S.CAPTION: captions,
            S.NUM_TOKENS: tokens.astype(np.int32),
            S.TRUNCATED: [bool(n == 120) for n in tokens],
            S.EMBEDDING: [rng.standard_normal(n * d_model).astype(np.float16).tobytes() for n in tokens],
        }
    )


def write_old_part(store: EmbeddingStore, table: pa.Table) -> str:
    """A part as the store wrote them before: one table, 64-row groups."""
    part_id = uuid.uuid4().hex
    path = store.location.join("parts", part_id[:2], f"part-{part_id}.parquet")
    table = table.cast(S.store_schema()).sort_by(S.CAPTION_KEY)
    write_parquet_atomic(
        store.location,
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


def test_lookups_return_the_stored_bytes_across_old_and_new_parts(tmp_path):
    store = EmbeddingStore(str(tmp_path / "store"), IDENTITY).open()
    old = rows([f"old caption {i}" for i in range(150)] + [""], IDENTITY.d_model, 1)
    new = rows([f"new caption {i}" for i in range(120)], IDENTITY.d_model, 2)
    old_path = write_old_part(store, old)
    new_path = store.write_part(new, row_group_bytes=4 * 1024)
    assert [g.num_rows for g in map(pq.ParquetFile(old_path).metadata.row_group, range(3))] == [64, 64, 23]
    new_groups = pq.ParquetFile(new_path).metadata
    assert new_groups.num_rows == 120 and new_groups.num_row_groups > 30  # a few rows each
    assert pq.read_table(new_path).equals(new.cast(S.store_schema()).sort_by(S.CAPTION_KEY))

    expected = {row[S.CAPTION_KEY]: row for row in old.to_pylist() + new.to_pylist()}
    negative = caption_key("")
    index = store.index()
    rng = random.Random(0)
    for _ in range(20):
        keys = rng.choices(sorted(expected), k=12) + [negative, negative]
        found = store.lookup(keys, index)
        assert set(found) == set(keys)
        for key in keys:
            want = expected[key]
            assert found[key][S.EMBEDDING] == want[S.EMBEDDING]
            assert found[key][S.NUM_TOKENS] == want[S.NUM_TOKENS]
            assert found[key][S.TRUNCATED] == want[S.TRUNCATED]
    with pytest.raises(KeyError, match="lacks 1 caption"):
        store.lookup(["f" * 32, negative], index)


def test_attach_embeddings_counts_bytes(tmp_path):
    store = EmbeddingStore(str(tmp_path / "store"), IDENTITY).open()
    table = rows([f"caption {i}" for i in range(40)] + [""], IDENTITY.d_model, 3)
    store.write_part(table, row_group_bytes=4 * 1024)
    keys = table.column(S.CAPTION_KEY).to_pylist()
    batch = {
        S.CAPTION_KEY: np.array([keys[0], keys[0], keys[5]], dtype=object),
        S.NEGATIVE_KEY: np.array([caption_key("")] * 3, dtype=object),
    }
    out = AttachEmbeddings(store.root, IDENTITY, store.index())(dict(batch))
    sizes = dict(zip(keys, (len(e) for e in table.column(S.EMBEDDING).to_pylist()), strict=True))
    assert out["_store_bytes_used"].tolist() == [
        sizes[keys[0]] + sizes[keys[5]] + sizes[caption_key("")],
        0,
        0,
    ]
    assert out["_store_bytes_read"][0] >= out["_store_bytes_used"][0] > 0
    again = AttachEmbeddings(store.root, IDENTITY, store.index())(dict(batch))
    assert again["_store_bytes_read"].sum() == 0  # cached in this process
    assert again[S.PROMPT_EMBEDDING][2] == table.column(S.EMBEDDING)[5].as_py()
    off = AttachEmbeddings(store.root, IDENTITY, store.index(), negatives=False)(dict(batch))
    assert off["_store_bytes_used"][0] == sizes[keys[0]] + sizes[keys[5]]


def test_cache_is_bounded_least_recently_used_out():
    cache = RowGroupCache(limit=1000)
    for i in range(25):
        cache.put(("uri", "part", i), {f"k{i}": {}}, 100)
        if i >= 1:
            assert cache.get(("uri", "part", 0)) is not None  # kept warm: never the oldest
    assert cache.size <= 1000 and len(cache.entries) == 10
    assert cache.get(("uri", "part", 0)) is not None and cache.get(("uri", "part", 1)) is None
    cache.put(("uri", "part", 99), {}, 5000)  # larger than the whole cache: not kept
    assert cache.get(("uri", "part", 99)) is None and cache.size <= 1000


def test_sorted_replay_reads_at_most_twice_what_it_uses(tmp_path):
    d_model = 512  # 1/8 of PixArt's T5, row groups scaled alike
    identity = StoreIdentity(encoder="test", d_model=d_model)
    store = EmbeddingStore(str(tmp_path / "store"), identity).open()
    captions = [f"prompt number {i}" for i in range(80)]
    for part, chunk in enumerate((captions[:40], captions[40:] + [""])):
        store.write_part(rows(chunk, d_model, 10 + part), row_group_bytes=ROW_GROUP_BYTES // 8)
    rng = random.Random(1)
    plan = [
        (bucket, caption_key(c), image)
        for c in captions
        for bucket in [rng.choice([(1024, 1024), (768, 1344), (1344, 768)])]
        for image in range(2)
    ]
    plan.sort()  # by bucket, then caption key (the pipeline's plan order)
    attach = AttachEmbeddings(store.root, identity, store.index())
    read = used = 0
    for start in range(0, len(plan), 8):
        window = plan[start : start + 8]
        batch = {
            S.CAPTION_KEY: np.array([key for _, key, _ in window], dtype=object),
            S.NEGATIVE_KEY: np.array([caption_key("")] * len(window), dtype=object),
        }
        out = attach(batch)
        read += int(out["_store_bytes_read"].sum())
        used += int(out["_store_bytes_used"].sum())
    assert 0 < read <= 2 * used


def test_reads_counts_group_chunks(tmp_path):
    store = EmbeddingStore(str(tmp_path / "store"), IDENTITY).open()
    table = rows([f"c{i}" for i in range(10)], IDENTITY.d_model, 4)
    path = store.write_part(table, row_group_bytes=1)  # one row per group
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 10
    key = table.sort_by(S.CAPTION_KEY).column(S.CAPTION_KEY)[3].as_py()
    index = store.index()  # on the driver; a lookup task's process reads the footer itself
    store_module.clear_caches()
    reads = Reads()
    store.lookup([key], index, reads)
    chunks = sum(metadata.row_group(3).column(j).total_compressed_size for j in (0, 2, 3, 4))
    assert reads.bytes_read == chunks + metadata.serialized_size + 8
    assert reads.rows_read == 1 and reads.groups_read == 1 and reads.embeddings_used == 1
