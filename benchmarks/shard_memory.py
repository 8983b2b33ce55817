"""Peak memory of one ImageSink write task: 1,000 rows of 1024² PNG-sized images, by rows_per_shard.

Each measurement runs in a fresh process: ``ImageSink.write`` (the current one, or the one of
``--base`` loaded from git) is called directly with a fake ctx, on blocks of 8 rows generated as they
are consumed (random bytes: the writer does not decode images). Reported: the process's peak RSS
above its RSS just before the call, and pyarrow's pool peak.

    python benchmarks/shard_memory.py [--rows 1000] [--image-mb 1.5] [--shards 100 1000] [--base 63c0442]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from pixart_batch import schema as S


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sink_class(base: str | None) -> Any:
    if base is None:  # today's Ray sink: a thin adapter over the Ray-free ImageWriter
        from pixart_batch.executors.ray import ImageSink
        from pixart_batch.output.writers import ImageWriter

        return lambda *args: ImageSink(ImageWriter(*args))
    source = subprocess.run(
        ["git", "show", f"{base}:pixart_batch/sinks.py"], capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader("pixart_batch._sinks_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "pixart_batch"
    sys.modules[spec.name] = module
    exec(compile(source, f"{base}:pixart_batch/sinks.py", "exec"), module.__dict__)
    return module.ImageSink


def blocks(rows: int, image_bytes: int, size: int = 8) -> Any:
    """Arrow blocks (what Ray hands a write task), made as they are consumed."""
    import pyarrow as pa

    rng = np.random.default_rng(0)
    for start in range(0, rows, size):
        n = min(size, rows - start)
        yield pa.Table.from_pydict(
            {
                S.KEY: np.array([f"{start + i:032x}" for i in range(n)], dtype=object),
                S.PROMPT_ID: np.array([str(start + i) for i in range(n)], dtype=object),
                S.IMAGE_INDEX: np.zeros(n, dtype=np.int32),
                S.PROMPT: np.array(["a photograph of a cat"] * n, dtype=object),
                S.CAPTION: np.array(["a photograph of a cat"] * n, dtype=object),
                S.NEGATIVE_PROMPT: np.array([""] * n, dtype=object),
                S.NEGATIVE_CAPTION: np.array([""] * n, dtype=object),
                S.SEED: np.arange(start, start + n, dtype=np.int64),
                S.SCHEDULER: np.array(["dpm"] * n, dtype=object),
                S.NUM_TOKENS: np.full(n, 20, dtype=np.int32),
                S.TRUNCATED: np.zeros(n, dtype=bool),
                S.WIDTH: np.full(n, 1024, dtype=np.int32),
                S.HEIGHT: np.full(n, 1024, dtype=np.int32),
                S.BUCKET_WIDTH: np.full(n, 1024, dtype=np.int32),
                S.BUCKET_HEIGHT: np.full(n, 1024, dtype=np.int32),
                S.SHA256: np.array(["0" * 64] * n, dtype=object),
                "image_bytes": np.array([rng.bytes(image_bytes) for _ in range(n)], dtype=object),
                S.ERROR: np.array([""] * n, dtype=object),
                S.TRACEBACK: np.array([""] * n, dtype=object),
            }
        )


def measure(args: argparse.Namespace) -> None:
    import pyarrow as pa

    constants = {
        S.STEPS: 20,
        S.GUIDANCE: 4.5,
        S.TIMESTEPS: list(range(20)),
        S.MODEL: "PixArt-alpha/PixArt-XL-2-1024-MS",
        S.DTYPE: "float16",
        S.MAX_SEQ_LEN: 120,
        S.IMAGE_FORMAT: "png",
        S.FAST_MODE: "exact",
    }
    sink = sink_class(args.base)
    with tempfile.TemporaryDirectory() as out:
        writer = sink(out, "bench", constants, {"model": "x"}, args.rows_per_shard, args.row_group_size)
        before = rss_mb()
        start = time.perf_counter()
        result = writer.write(blocks(args.rows, int(args.image_mb * 1e6)), SimpleNamespace(task_idx=0))
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "peak_above_start_mb": round(peak_mb() - before, 1),
                "arrow_pool_peak_mb": round(pa.default_memory_pool().max_memory() / 2**20, 1),
                "files": result["files"] if isinstance(result, dict) else result.shards,
                "rows": result["rows"] if isinstance(result, dict) else result.rows,
                "s": round(seconds, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--image-mb", type=float, default=1.5)
    parser.add_argument("--shards", type=int, nargs="+", default=[100, 1000], help="rows_per_shard values")
    parser.add_argument("--row-group-size", type=int, default=100)
    parser.add_argument("--base", default="63c0442", help="git revision of the 'before' sinks.py")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows-per-shard", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--code", choices=["before", "after"], default="after", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.base = args.base if args.code == "before" else None
        measure(args)
        return
    print(
        f"{args.rows} rows of {args.image_mb} MB images, row_group_size {args.row_group_size}, "
        "blocks of 8 rows"
    )
    print("| code | rows_per_shard | shards | peak RSS above start MB | arrow pool peak MB | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for code in ("before", "after"):
        for rows_per_shard in args.shards:
            command = [sys.executable, __file__, "--child", "--code", code, "--base", args.base]
            command += [
                "--rows",
                str(args.rows),
                "--image-mb",
                str(args.image_mb),
                "--row-group-size",
                str(args.row_group_size),
            ]
            command += ["--rows-per-shard", str(rows_per_shard)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{code} {rows_per_shard}: failed\n{done.stderr[-3000:]}")
            found = json.loads(done.stdout.splitlines()[-1])
            print(
                f"| {code} | {rows_per_shard} | {found['files']} | {found['peak_above_start_mb']} | "
                f"{found['arrow_pool_peak_mb']} | {found['s']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
