"""Driver memory while prompt sources are read through the column flags: a ``datasets`` ``save_to_disk``
folder (``caption`` + ``label``) and a Parquet file (``text``), at several row counts.

Each measurement runs in a fresh process that imports what it needs, reports its RSS (the baseline),
then reads the source; this process samples the child's RSS every 20 ms. ``growth`` is the peak minus
the baseline. Modes:

- ``scan``: what ``generate`` and ``plan`` do with a source: :func:`~pixart_batch.prompts.scan_prompts`
  (the validating pass) then :func:`~pixart_batch.prompts.iter_prompts` (the pass that stages), through
  a ``PromptSource`` with ``prompt_column`` / ``label_column``, as ``--prompt-column caption
  --label-column label`` give it;
- ``plan``: ``pixart-batch plan SOURCE --prompt-column ... --json`` on the tiny recipe, end to end;
- ``load_from_disk`` (datasets folder only, for comparison): ``datasets.load_from_disk(DIR)`` iterated
  with ``.iter(batch_size=1000)`` over the caption column: Arrow memory-mapped, so the pages it touches
  count in the RSS.

    python benchmarks/prompt_sources.py [--rows 100000 1000000] [--modes scan plan load_from_disk]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "red blue green golden ancient futuristic cat dog dragon castle forest ocean city robot "
    "portrait painting photo of a in the with at night"
).split()

CHILD = """
import json, sys, time
import psutil
mode, path, column, label = sys.argv[1:5]
if mode == "scan":
    from pixart_batch.prompts import PromptSource, iter_prompts, scan_prompts
    import pyarrow, numpy  # what the readers import, so the baseline holds them
    source = PromptSource(path, prompt_column=column, **({"label_column": label} if label else {}))
else:
    import datasets
print(json.dumps({"ready": psutil.Process().memory_info().rss}), flush=True)
start = time.perf_counter()
if mode == "scan":
    scan = scan_prompts(source)
    count = sum(1 for _ in iter_prompts(path, scan))
    labels = len(scan.labels)
else:
    count = 0
    for batch in datasets.load_from_disk(path).select_columns([column]).iter(batch_size=1000):
        count += len(batch[column])
    labels = None
print(json.dumps({"rows": count, "labels": labels, "seconds": time.perf_counter() - start}), flush=True)
"""


def captions(rows: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    words = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) for _ in range(rows)]
    return [f"{text} number {i}" for i, text in enumerate(words)]


def build(work: Path, rows: int) -> dict[str, Path]:
    """A ``save_to_disk`` folder (caption + label, 1000 classes) and a Parquet file (text), ``rows`` rows."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets.disable_progress_bars()
    texts = pa.array(captions(rows), pa.string())
    labels = pa.array([f"class {i % 1000}" for i in range(rows)], pa.string())
    folder = work / f"captions-{rows}"
    datasets.Dataset(pa.table({"caption": texts, "label": labels})).save_to_disk(str(folder))
    parquet = work / f"texts-{rows}.parquet"
    pq.write_table(pa.table({"text": texts}), parquet)
    return {"datasets": folder, "parquet": parquet}


def sample(command: list[str]) -> tuple[int, int, str]:
    """Run ``command``: its baseline RSS (a first line ``{"ready": RSS}``, else 0), peak RSS, stdout."""
    import threading

    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, cwd=ROOT, text=True)
        lines: list[str] = []
        assert process.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(process.stdout))  # type: ignore[arg-type]
        reader.start()
        child = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            try:
                peak = max(peak, child.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        reader.join()
        if process.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{errors.read()[-3000:]}")
    baseline = json.loads(lines[0])["ready"] if lines and lines[0].startswith('{"ready"') else 0
    return baseline, max(peak, baseline), "".join(lines[1:] if baseline else lines)


def measure(mode: str, kind: str, path: Path, rows: int) -> dict:
    column, label = ("caption", "label") if kind == "datasets" else ("text", "")
    start = time.perf_counter()
    if mode == "plan":
        flags = ["--prompt-column", column] + (["--label-column", label] if label else [])
        recipe = ["--config", "configs/tiny.yaml", "--json"]
        command = [sys.executable, "-m", "pixart_batch", "plan", str(path), *flags, *recipe]
        baseline, peak, out = sample(command)
        assert json.loads(out)["prompts"] == rows
    else:
        baseline, peak, out = sample([sys.executable, "-c", CHILD, mode, str(path), column, label])
        assert json.loads(out.strip().splitlines()[-1])["rows"] == rows
    return {
        "mode": mode,
        "source": kind,
        "rows": rows,
        "baseline_mb": round(baseline / 2**20, 1) if baseline else None,
        "peak_mb": round(peak / 2**20, 1),
        "growth_mb": round((peak - baseline) / 2**20, 1) if baseline else None,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--modes", nargs="+", default=["scan", "plan", "load_from_disk"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for rows in args.rows:
            sources = build(Path(work), rows)
            for mode in args.modes:
                for kind, path in sources.items():
                    if mode == "load_from_disk" and kind != "datasets":
                        continue
                    results.append(measure(mode, kind, path, rows))
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print("| mode | source | rows | baseline MB | peak MB | growth MB | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        cells = [r["mode"], r["source"], f"{r['rows']:,}", r["baseline_mb"], r["peak_mb"], r["growth_mb"]]
        cells.append(r["wall_s"])
        print("| " + " | ".join("-" if cell is None else str(cell) for cell in cells) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
