"""ImageWriter.write streams shards row group by row group (Ray-free)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixart_batch import schema as S
from pixart_batch.executors.ray import numpy_batches
from pixart_batch.output import OutputDataset
from pixart_batch.output.guard import shard_settings
from pixart_batch.output.writers import ImageWriter, to_table
from pixart_batch.schema import SHARD_SETTINGS_KEY
from pixart_batch.storage import ParquetStreamWriter, StorageFullError, locate, write_parquet_atomic

CONSTANTS = {
    S.STEPS: 20,
    S.GUIDANCE: 4.5,
    S.TIMESTEPS: [999, 500, 1],
    S.MODEL: "tiny",
    S.DTYPE: "float32",
    S.MAX_SEQ_LEN: 120,
    S.IMAGE_FORMAT: "png",
    S.FAST_MODE: "exact",
}
SETTINGS = {"model": "tiny", "seed": 7}


def block(start: int, size: int, failed: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    keys = [f"k{start + i:04d}" for i in range(size)]
    rng = np.random.default_rng(start)
    batch: dict[str, np.ndarray] = {
        S.KEY: np.array(keys, dtype=object),
        S.PROMPT_ID: np.array([f"p{start + i}" for i in range(size)], dtype=object),
        S.IMAGE_INDEX: np.arange(size, dtype=np.int32),
        S.PROMPT: np.array(["a cat"] * size, dtype=object),
        S.CAPTION: np.array(["a cat"] * size, dtype=object),
        S.NEGATIVE_PROMPT: np.array([""] * size, dtype=object),
        S.NEGATIVE_CAPTION: np.array([""] * size, dtype=object),
        S.SEED: np.arange(start, start + size, dtype=np.int64),
        S.SCHEDULER: np.array(["dpm"] * size, dtype=object),
        S.NUM_TOKENS: np.full(size, 5, dtype=np.int32),
        S.TRUNCATED: np.array([i % 3 == 0 for i in range(size)]),
        S.WIDTH: np.full(size, 64, dtype=np.int32),
        S.HEIGHT: np.full(size, 48, dtype=np.int32),
        S.BUCKET_WIDTH: np.full(size, 64, dtype=np.int32),
        S.BUCKET_HEIGHT: np.full(size, 48, dtype=np.int32),
        S.SHA256: np.array(["0" * 64] * size, dtype=object),
        "image_bytes": np.array([rng.bytes(100 + i) for i in range(size)], dtype=object),
        S.ERROR: np.array(["decode: boom" if i in failed else "" for i in range(size)], dtype=object),
        S.TRACEBACK: np.array(["tb" if i in failed else "" for i in range(size)], dtype=object),
        "_busy_denoise_s": np.full(size, 0.5),
        "_store_bytes_read": np.array([10] + [0] * (size - 1), dtype=np.int64),
        "_store_bytes_used": np.array([4] + [0] * (size - 1), dtype=np.int64),
    }
    return batch


def sink(out: Path, rows_per_shard: int, row_group_size: int) -> ImageWriter:
    return ImageWriter(str(out), "r1", CONSTANTS, SETTINGS, rows_per_shard, row_group_size)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_streams_shards_like_the_whole_table_writer(tmp_path):
    out = tmp_path / "out"
    # The last batch arrives as a Ray block (an Arrow table), through the Ray sinks' conversion.
    blocks = [block(0, 7), block(7, 5, failed=(1, 3)), *numpy_batches([pa.Table.from_pydict(block(12, 9))])]
    result = sink(out, rows_per_shard=6, row_group_size=4).write(iter(blocks), 3)
    assert result.rows == 19 and result.failed == 2 and result.shards == 4
    assert result.busy_s["denoise"] == pytest.approx(0.5 * 21)
    assert result.store_bytes_read == 30 and result.store_bytes_used == 12
    assert result.buckets == {"64x48": 19}  # WIDTHxHEIGHT
    names = [f"data/r1/0000/train-r1-00003-{n:04d}.parquet" for n in range(4)]
    assert files_under(out) == sorted(names + ["failures/failures-r1-00003.parquet"])
    assert result.bytes == sum(os.path.getsize(out / name) for name in names)

    # What the whole-table writer made of the same rows: same rows, schema, metadata, row groups.
    healthy = [block(0, 7), {k: v[[0, 2, 4]] for k, v in block(7, 5).items()}, block(12, 9)]
    rows = {k: np.concatenate([b[k] for b in healthy]) for k in healthy[0]}
    output = OutputDataset(str(out))
    reference = tmp_path / "ref.parquet"
    for n, start in enumerate(range(0, 19, 6)):
        piece = {k: v[start : start + 6] for k, v in rows.items()}
        table = to_table(piece, CONSTANTS, SETTINGS)
        write_parquet_atomic(
            locate(str(tmp_path)), str(reference), table, row_group_size=4, compression="zstd"
        )
        want, got = pq.ParquetFile(reference), pq.ParquetFile(out / names[n])
        assert got.schema_arrow == want.schema_arrow
        assert got.schema_arrow.metadata == want.schema_arrow.metadata
        assert json.loads(got.schema_arrow.metadata[SHARD_SETTINGS_KEY]) == SETTINGS
        sizes = [got.metadata.row_group(i).num_rows for i in range(got.metadata.num_row_groups)]
        assert sizes == [want.metadata.row_group(i).num_rows for i in range(want.metadata.num_row_groups)]
        assert sizes == ([4, 2] if n < 3 else [1])
        assert got.read().equals(want.read())
    assert shard_settings(output) == SETTINGS
    assert output.committed_keys() == set(rows[S.KEY].tolist())
    assert set(output.committed_failures()) == {"k0008", "k0010"}


def test_no_rows_no_files(tmp_path):
    out = tmp_path / "out"
    result = sink(out, 5, 2).write(iter([block(0, 2, failed=(0, 1))]), 0)
    assert result.rows == 0 and result.shards == 0 and result.failed == 2
    assert files_under(out) == ["failures/failures-r1-00000.parquet"]


def test_exception_mid_shard_leaves_no_file(tmp_path):
    out = tmp_path / "out"

    def blocks():
        yield block(0, 7)  # one full shard of 5 committed, 2 rows into the next
        yield block(7, 2)
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        sink(out, rows_per_shard=5, row_group_size=2).write(blocks(), 0)
    assert files_under(out) == ["data/r1/0000/train-r1-00000-0000.parquet"]
    assert pq.read_metadata(out / "data/r1/0000/train-r1-00000-0000.parquet").num_rows == 5

    def failing():
        yield block(0, 3)
        raise RuntimeError("again")

    out2 = tmp_path / "out2"
    with pytest.raises(RuntimeError):
        sink(out2, rows_per_shard=100, row_group_size=2).write(failing(), 0)
    assert files_under(out2 / "data") == []


def test_full_disk_is_one_error_and_no_partial_shard(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXART_BATCH_FULL", "train-")
    out = tmp_path / "out"
    with pytest.raises(StorageFullError, match="no space left"):
        sink(out, rows_per_shard=4, row_group_size=2).write(iter([block(0, 3)]), 0)
    assert files_under(out / "data") == []


def test_stream_writer_on_an_object_store(monkeypatch):
    from helpers import s3_server

    with s3_server("bucket") as (_, env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        loc = locate("s3://bucket/out")
        table = pa.table({"a": list(range(10))})
        with ParquetStreamWriter(loc, loc.join("x.parquet"), table.schema) as writer:
            writer.write(table.slice(0, 6), row_group_size=3)
            writer.write(table.slice(6), row_group_size=3)
            size = writer.commit()
        assert loc.fs.get_file_info(loc.join("x.parquet")).size == size
        with loc.fs.open_input_file(loc.join("x.parquet")) as handle:
            assert pq.read_table(handle).equals(table)
        with (
            pytest.raises(ValueError),
            ParquetStreamWriter(loc, loc.join("y.parquet"), table.schema) as writer,
        ):
            writer.write(table)
            raise ValueError("crash before commit")
        from pyarrow import fs

        assert loc.fs.get_file_info(loc.join("y.parquet")).type == fs.FileType.NotFound
