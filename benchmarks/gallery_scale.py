"""Build time and peak memory of ``pixart-batch gallery`` against the number of rows of an output.

The outputs are synthetic and cheap: Parquet shards written directly in the output's schema
(:func:`pixart_batch.schema.shard_schema`: 10 labels, ``clip_score`` and ``aesthetic_score``, three
buckets), each image a tiny PNG, no model run. Each gallery is built in a fresh process (the CLI, as a
user runs it); its wall time is measured here, its CPU time and peak RSS reported by the process itself
(``resource.getrusage``; on a shared machine the CPU time is the steadier number). The outputs are
kept under ``--work`` and reused when they are already there.

    python benchmarks/gallery_scale.py                                  # 10k, 100k, 1M rows
    python benchmarks/gallery_scale.py --rows 10000 100000 --where ""   # without the --where preview
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["tench", "springer", "cassette", "chain saw", "church", "horn", "truck", "pump", "golf ball"]
LABELS.append("parachute")
BUCKETS = [(256, 256), (224, 288), (288, 224)]
SETTINGS = {
    "checkpoint": "synthetic (benchmarks/gallery_scale.py)",
    "output.format": "parquet",
    "output.label_names": LABELS,
    "score": {"model": "synthetic", "aesthetic_head": "synthetic"},
}


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, "PNG")
    return out.getvalue()


def _shard(start: int, count: int, images: dict, rng) -> object:
    """Rows ``start .. start + count`` as a table of the output's shard schema."""
    import numpy as np
    import pyarrow as pa

    from pixart_batch import schema as S

    index = np.arange(start, start + count)
    labels = (index * 7919 // 13) % len(LABELS)
    buckets = (index // 37) % len(BUCKETS)
    ids = [f"s{i:016x}" for i in index.tolist()]
    pairs = zip(index.tolist(), labels.tolist(), strict=True)
    prompts = [f"a photo of a {LABELS[label]}, number {i % 997}" for i, label in pairs]
    clip = rng.normal(24 + labels * 0.8, 4.0).astype(np.float32)
    width = np.array([BUCKETS[b][0] for b in buckets], dtype=np.int32)
    height = np.array([BUCKETS[b][1] for b in buckets], dtype=np.int32)
    data = [images[(int(b), int(label))] for b, label in zip(buckets, labels, strict=True)]
    columns = {
        S.KEY: [f"{i}-00000" for i in ids],
        S.PROMPT_ID: ids,
        S.IMAGE_INDEX: np.zeros(count, np.int32),
        S.PROMPT: prompts,
        S.CAPTION: [p.lower() for p in prompts],
        S.NEGATIVE_PROMPT: [""] * count,
        S.NEGATIVE_CAPTION: [""] * count,
        S.SEED: index * 7919 % 2**31,
        S.STEPS: np.full(count, 20, np.int32),
        S.GUIDANCE: np.full(count, 4.5, np.float32),
        S.TIMESTEPS: [[999, 750, 500, 250]] * count,
        S.MODEL: ["synthetic"] * count,
        S.SCHEDULER: ["DPMSolverMultistepScheduler"] * count,
        S.DTYPE: ["float16"] * count,
        S.MAX_SEQ_LEN: np.full(count, 120, np.int32),
        S.NUM_TOKENS: np.full(count, 12, np.int32),
        S.TRUNCATED: np.zeros(count, bool),
        S.WIDTH: width,
        S.HEIGHT: height,
        S.BUCKET_WIDTH: width,
        S.BUCKET_HEIGHT: height,
        S.IMAGE_FORMAT: ["png"] * count,
        S.FAST_MODE: ["exact"] * count,
        S.CLIP_SCORE: clip,
        S.AESTHETIC_SCORE: rng.normal(5.0, 0.8, count).astype(np.float32),
        S.SHA256: [d[1] for d in data],
        S.LABEL: labels.astype(np.int64),
        S.IMAGE: [{"bytes": d[0], "path": None} for d in data],
    }
    schema = S.shard_schema(SETTINGS)
    arrays = {name: pa.array(columns[name], type=schema.field(name).type) for name in schema.names}
    return pa.table(arrays, schema=schema)


def make_output(path: Path, rows: int, rows_per_shard: int, row_group_size: int) -> float:
    """A synthetic output of ``rows`` rows at ``path`` (kept when it is there already); returns seconds."""
    import hashlib

    import numpy as np
    import pyarrow.parquet as pq

    from pixart_batch.ownership import write_marker
    from pixart_batch.storage import locate

    done = path / ".gallery-scale-rows"
    if done.exists() and done.read_text() == f"{rows} {rows_per_shard} {row_group_size}":
        return 0.0
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    path.mkdir(parents=True)
    write_marker(locate(str(path)))
    (path / "settings.json").write_text(json.dumps(SETTINGS, indent=2))
    images = {}
    for b in range(len(BUCKETS)):
        for label in range(len(LABELS)):
            png = _png((40 + 60 * b, 20 * label, 255 - 20 * label))
            images[(b, label)] = (png, hashlib.sha256(png).hexdigest())
    rng = np.random.default_rng(0)
    for number, start in enumerate(range(0, rows, rows_per_shard)):
        table = _shard(start, min(rows_per_shard, rows - start), images, rng)
        shard = path / "data" / "bench" / f"{number // 1000:04d}" / f"train-bench-{number:05d}-0000.parquet"
        shard.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, shard, row_group_size=row_group_size, compression="zstd")
    done.write_text(f"{rows} {rows_per_shard} {row_group_size}")
    return time.perf_counter() - started


_CHILD = """
import json, resource, sys
from pixart_batch.cli import main
code = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
report = {"exit": code, "peak_rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}
print(json.dumps(report), file=sys.stderr)
"""


def measure(path: Path, where: str | None) -> dict:
    """``pixart-batch gallery PATH`` in a fresh process: wall seconds, peak RSS, what it printed."""
    argv = ["gallery", str(path), *(["--where", where] if where else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    command = [sys.executable, "-c", _CHILD, *argv]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"gallery_scale: the gallery of {path} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stderr.strip().splitlines()[-1])
    thumbs = path / "gallery" / "thumbs"
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(report["peak_rss_mib"], 1),
        "cpu_s": round(report["cpu_s"], 2),
        "shown": len(list(thumbs.iterdir())) if thumbs.exists() else 0,
        "summary": done.stdout.strip().splitlines()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    work = Path("/tmp/pixart-gallery-scale")
    parser.add_argument("--work", type=Path, default=work, help="where the outputs are kept")
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--row-group-size", type=int, default=100, help="output.row_group_size (100)")
    parser.add_argument("--where", default="clip_score >= 28", help="also with this --where ('' for none)")
    args = parser.parse_args(argv)
    print(f"gallery_scale: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    print("| rows | shards | made in s | gallery wall s | CPU s | peak RSS MiB |", end="")
    print(" --where wall s | CPU s | peak RSS MiB | shown |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        path = args.work / f"rows-{rows}"
        made = make_output(path, rows, args.rows_per_shard, args.row_group_size)
        plain = measure(path, None)
        where = measure(path, args.where) if args.where else None
        shards = -(-rows // args.rows_per_shard)
        cells = [f"{rows:,}", str(shards), f"{made:.1f}"]
        for measured in (plain, where):
            numbers = ("seconds", "cpu_s", "peak_rss_mib")
            cells += (
                [f"{measured[n]:.1f}" if n != "peak_rss_mib" else f"{measured[n]:.0f}" for n in numbers]
                if measured
                else ["—"] * 3
            )
        print("| " + " | ".join([*cells, str(plain["shown"])]) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
