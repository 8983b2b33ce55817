"""Driver memory while a large prompt file is read and planned (``generate --dry-run``).

For each size, writes a prompt file of N lines (varied text, ~10% with size flags, a few
repeated lines), runs ``pixart-batch generate --dry-run`` on the tiny recipe in a fresh
process with its own local Ray, and samples the driver process's RSS every 50 ms. The
driver streams the file twice (validate, then stage 50k-prompt chunks) and leaves
cleaning, sizing, expansion and the plan to Ray workers, so its peak should not grow
with N.

    python benchmarks/prompt_memory.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "red blue green golden ancient futuristic cat dog dragon castle forest ocean city robot portrait "
    "painting "
    "photo of a in the with at night"
).split()


def write_prompts(path: Path, lines: int) -> None:
    rng = random.Random(0)
    flags = ["", "", "", "", "", "", "", "", " --ar 1:2", " --hw 512:768"]
    with open(path, "w") as handle:
        for i in range(lines):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25)))
            handle.write(f"{text} number {i % (lines - 10) if lines > 10 else i}{rng.choice(flags)}\n")


def measure(lines: int, work: Path) -> dict:
    prompts = work / f"prompts-{lines}.txt"
    write_prompts(prompts, lines)
    output = work / f"out-{lines}"
    command = [
        sys.executable,
        "-m",
        "pixart_batch",
        "generate",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        "--dry-run",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"},
    )
    driver = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, driver.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"run with {lines} lines failed:\n{stderr[-3000:]}")
    report = json.loads((output / "run_report.json").read_text())
    return {
        "lines": lines,
        "file_mb": round(prompts.stat().st_size / 2**20, 1),
        "images_planned": report["images_planned"],
        "driver_peak_rss_mb": round(peak / 2**20, 1),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(n, Path(work)) for n in args.sizes]
    print(f"{'lines':>10} {'file MB':>8} {'planned':>9} {'driver peak RSS MB':>19} {'wall s':>7}")
    for row in rows:
        print(
            f"{row['lines']:>10} {row['file_mb']:>8} {row['images_planned']:>9} "
            f"{row['driver_peak_rss_mb']:>19} {row['wall_s']:>7}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
