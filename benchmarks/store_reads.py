"""Replay a run's embedding lookups against its store: rows and bytes read per embedding used.

Builds a store of N prompts (random float16 embeddings of ``--d-model``, 10-120 tokens, one shared
empty negative prompt) twice: as the store wrote parts before (64-row groups) and as it writes them
now (:func:`pixart_batch.store.EmbeddingStore.write_part`). Replays the plan in DiT batches through
``AttachEmbeddings``, the current one and the one of ``--base`` (loaded from git), in two orders:
image-key order and the pipeline's bucket-then-caption-key order. Used = embedding bytes of each
batch's distinct keys (prompts + the negative); read = compressed column chunks of the row groups read
plus part footers.

    python benchmarks/store_reads.py [--prompts 500] [--d-model 4096] [--base 63c0442]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixart_batch import schema as S
from pixart_batch import store as new_store
from pixart_batch.storage import write_parquet_atomic

BUCKETS = [(1024, 1024), (768, 1344), (1344, 768), (896, 1152), (1152, 896), (640, 1536)]


def old_module(base: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{base}:pixart_batch/store.py"], capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader("pixart_batch._store_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "pixart_batch"
    sys.modules[spec.name] = module
    exec(compile(source, f"{base}:pixart_batch/store.py", "exec"), module.__dict__)
    return module


def build(args: argparse.Namespace) -> tuple[pa.Table, list[str]]:
    rng = np.random.default_rng(0)
    captions = [f"prompt {i}: a photograph of thing number {i}" for i in range(args.prompts)] + [""]
    tokens = [int(n) for n in rng.integers(args.min_tokens, args.max_tokens + 1, len(captions))]
    tokens[-1] = 1  # the empty negative: one EOS token
    table = pa.table(
        {
            S.CAPTION_KEY: [new_store.caption_key(c) for c in captions],
            S.CAPTION: captions,
            S.NUM_TOKENS: pa.array(tokens, pa.int32()),
            S.TRUNCATED: [n == args.max_tokens for n in tokens],
            S.EMBEDDING: [rng.bytes(n * args.d_model * 2) for n in tokens],
        }
    )
    return table, captions[:-1]


def write_old_part(store: Any, table: pa.Table) -> None:
    """A part exactly as ``write_part`` wrote them before: one table, 64-row groups."""
    part_id = uuid.uuid4().hex
    path = store.location.join("parts", part_id[:2], f"part-{part_id}.parquet")
    write_parquet_atomic(
        store.location,
        path,
        table.cast(new_store.store_schema()).sort_by(S.CAPTION_KEY),
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


def plans(captions: list[str], images_per_prompt: int, buckets: int) -> dict[str, list[tuple[str, str]]]:
    """``{order: [(image key, caption key)]}``."""
    rng = random.Random(0)
    rows = []
    for i, caption in enumerate(captions):
        bucket = rng.choice(BUCKETS[:buckets])
        for image in range(images_per_prompt):
            key = hashlib.sha256(f"{i}:{image}".encode()).hexdigest()[:32]
            rows.append((bucket, new_store.caption_key(caption), key))
    return {
        "image key": [(key, ck) for _, ck, key in sorted(rows, key=lambda r: r[2])],
        "bucket, caption key": [(key, ck) for _, ck, key in sorted(rows)],
    }


class Counter:
    """Counts what the old code's ``ParquetFile.read_row_groups`` reads."""

    def __init__(self) -> None:
        self.bytes = self.rows = 0
        original = pq.ParquetFile.read_row_groups

        def counted(
            parquet: pq.ParquetFile, groups: list[int], columns: list[str] | None = None, **kw: Any
        ) -> pa.Table:
            names = parquet.schema_arrow.names
            wanted = [names.index(c) for c in columns or names]
            for i in groups:
                group = parquet.metadata.row_group(i)
                self.bytes += sum(group.column(j).total_compressed_size for j in wanted)
                self.rows += group.num_rows
            return original(parquet, groups, columns=columns, **kw)

        self.original = original
        pq.ParquetFile.read_row_groups = counted  # type: ignore[method-assign]

    def close(self) -> None:
        pq.ParquetFile.read_row_groups = self.original  # type: ignore[method-assign]


def replay(
    module: Any, root: str, identity: Any, plan: list[tuple[str, str]], batch: int, sizes: dict[str, int]
) -> dict:
    store = module.EmbeddingStore(root, identity)
    index = store.index()
    for name in ("_FOOTERS", "_GROUPS"):
        getattr(module, name, {}).clear()
    if hasattr(module, "_CACHE"):
        module._CACHE.clear()
    negative = new_store.caption_key("")
    attach = module.AttachEmbeddings(root, identity, index)
    counter = Counter() if not hasattr(module, "Reads") else None
    read = used = rows = distinct = 0
    if counter is None:  # the current code counts itself: collect its rows read too
        lookup = attach.store.lookup

        def counted(keys: list[str], index: Any = None, reads: Any = None) -> Any:
            nonlocal rows
            found = lookup(keys, index, reads)
            rows += reads.rows_read
            return found

        attach.store.lookup = counted
    start = time.perf_counter()
    try:
        for first in range(0, len(plan), batch):
            chunk = plan[first : first + batch]
            keys = [ck for _, ck in chunk]
            out = attach(
                {
                    S.KEY: np.array([k for k, _ in chunk], dtype=object),
                    S.CAPTION_KEY: np.array(keys, dtype=object),
                    S.NEGATIVE_KEY: np.array([negative] * len(chunk), dtype=object),
                }
            )
            wanted = set(keys) | {negative}
            used += sum(sizes[k] for k in wanted)
            distinct += len(wanted)
            if counter is None:
                read += int(out["_store_bytes_read"].sum())
    finally:
        if counter is not None:
            counter.close()
    if counter is not None:
        footers = [pq.read_metadata(path) for path, _, _ in index]
        read = counter.bytes + sum(m.serialized_size + 8 for m in footers)
        rows = counter.rows
    return {"read": read, "used": used, "rows": rows, "distinct": distinct, "s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument(
        "--buckets", type=int, default=4, help=f"distinct bucket sizes (at most {len(BUCKETS)})"
    )
    parser.add_argument("--batch", type=int, default=8, help="DiT batch size (rows per lookup)")
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--min-tokens", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument(
        "--cache-mb",
        type=float,
        default=new_store.CACHE_BYTES / 2**20,
        help="row-group cache of the current code",
    )
    parser.add_argument("--base", default="63c0442", help="git revision of the 'before' store.py")
    args = parser.parse_args()

    before = old_module(args.base)
    new_store._CACHE.limit = int(args.cache_mb * 2**20)
    table, captions = build(args)
    sizes = dict(
        zip(
            table.column(S.CAPTION_KEY).to_pylist(),
            (len(e) for e in table.column(S.EMBEDDING).to_pylist()),
            strict=True,
        )
    )
    images = len(captions) * args.images_per_prompt
    identity = new_store.StoreIdentity(encoder="bench", d_model=args.d_model)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        old_root, new_root = str(Path(tmp, "old")), str(Path(tmp, "new"))
        write_old_part(new_store.EmbeddingStore(old_root, identity).open(), table)
        new_store.EmbeddingStore(new_root, identity).open().write_part(table)
        for order, plan in plans(captions, args.images_per_prompt, args.buckets).items():
            for label, module, root, layout in (
                ("before", before, old_root, "64-row groups"),
                ("after", new_store, old_root, "64-row groups"),
                ("after", new_store, new_root, "≤256 KiB groups"),
            ):
                stats = replay(module, root, identity, plan, args.batch, sizes)
                results.append((label, layout, order, stats))
    print(
        f"{len(captions)} prompts × {args.images_per_prompt} images, {args.buckets} buckets, "
        f"batch {args.batch}, "
        f"d_model {args.d_model}, {args.min_tokens}-{args.max_tokens} tokens; "
        f"mean embedding {np.mean(list(sizes.values())) / 1e6:.3f} MB, "
        f"store {sum(sizes.values()) / 1e6:.0f} MB; "
        f"current code's cache {args.cache_mb:.0f} MiB"
    )
    print(
        "| code | store parts | plan order | rows read / embedding used | bytes read / used "
        "| MB read / image | replay s |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for label, layout, order, st in results:
        rows = f"{st['rows'] / st['distinct']:.1f}"
        print(
            f"| {label} | {layout} | {order} | {rows} | {st['read'] / st['used']:.2f} | "
            f"{st['read'] / images / 1e6:.2f} | {st['s']:.1f} |"
        )


if __name__ == "__main__":
    main()
