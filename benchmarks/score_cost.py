"""The throughput cost of quality scores (``stages.score``): images/s with and without, same run.

    python benchmarks/score_cost.py [--prompts N] [--rounds R] [--clip tiny|DIR] [--size tiny|small]
                                    [--workdir DIR] [--no-append]

One process, the local executor, configs/tiny.yaml on the tiny (or ``small``) PixArt checkpoint: a
warm-up run, then ``--rounds`` pairs of fresh runs on the same prompts, alternating (without scores,
with scores; then with, without), so warm caches favour neither. Each run's generate-phase images/s is
its ``run_report.json``'s ``images_per_second`` (first batch in to last shard committed); the score
stage's own busy seconds are its ``stage_busy_seconds["score"]``. Printed as a table and appended to
benchmarks/RESULTS.md (unless ``--no-append``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "a red blue green small big cat dog house tree boat city night sky forest river robot castle flower"
).split()
SHAPES = ["", " --ar 1:2", " --ar 2:1", " --hw 80:80", " --ar 3:4"]


def prompts_file(path: Path, count: int) -> Path:
    lines = [
        " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(6)) + SHAPES[i % len(SHAPES)]
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_run(prompts: Path, output: Path, scored: bool, args: argparse.Namespace) -> dict:
    from pixart_batch.config import load_config, with_overrides
    from pixart_batch.run.app import execute, prepare_run

    overrides: dict = {"ray.executor": "local", "console.progress_interval_s": 3600.0}
    if args.size == "small":
        from pixart_batch.tiny import cached_tiny_checkpoint

        overrides["model.path"] = str(cached_tiny_checkpoint(0, size="small"))
    if scored:
        overrides.update({"stages.score.enabled": True, "stages.score.model": args.clip})
    config = with_overrides(load_config(ROOT / "configs" / "tiny.yaml"), overrides)
    shutil.rmtree(output, ignore_errors=True)
    return execute(prepare_run(config, str(prompts), str(output)), log=lambda _: None)


def machine() -> str:
    return f"{platform.node() or 'unknown'}, {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--clip", default="tiny", help="stages.score.model: tiny (default) or a CLIP directory / hub id"
    )
    parser.add_argument("--size", default="tiny", choices=("tiny", "small"), help="the PixArt checkpoint")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="score-cost-"))
    workdir.mkdir(parents=True, exist_ok=True)
    prompts = prompts_file(workdir / "prompts.txt", args.prompts)
    one_run(prompts, workdir / "warmup", True, args)  # imports, the tiny models built and cached
    results: dict[bool, list[dict]] = {False: [], True: []}
    for round_ in range(args.rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for scored in order:
            results[scored].append(one_run(prompts, workdir / f"run-{round_}-{int(scored)}", scored, args))
    rows = []
    for scored in (False, True):
        rates = [r["images_per_second"] for r in results[scored]]
        busy = [r["stage_busy_seconds"].get("score", 0.0) for r in results[scored]]
        share = [b / r["stage_seconds"]["generate"] for b, r in zip(busy, results[scored], strict=True)]
        rows.append(
            (
                scored,
                rates,
                statistics.median(busy),
                statistics.median(share),
                results[scored][0]["images_generated"],
            )
        )
    base, best = statistics.median(rows[0][1]), max(rows[0][1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    import torch

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/score_cost.py " + " ".join(sys.argv[1:])
    lines = [
        f"### Score cost `{args.size}` PixArt + `{args.clip}` CLIP — {now}",
        "",
        f"Machine: {machine()}; commit {commit}; torch {torch.__version__}. Command: `{command.strip()}`.",
        f"{args.prompts} prompts (mixed aspect ratios), configs/tiny.yaml, local executor, "
        f"{args.rounds} runs each, "
        "alternating; images/s of the generate phase (run_report.json `images_per_second`), median.",
        "",
        "| run | images | images/s median | images/s best | runs | median ratio to unscored "
        "| best ratio to unscored "
        "| score busy s (median) | score share of the generate phase |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for scored, rates, busy, share, images in rows:
        name = "with `stages.score`" if scored else "without scores"
        shown = ", ".join(f"{r:.2f}" for r in rates)
        median = statistics.median(rates)
        lines.append(
            f"| {name} | {images} | {median:.3f} | {max(rates):.3f} | {shown} | {median / base:.3f} "
            f"| {max(rates) / best:.3f} "
            f"| {busy:.2f} | {share:.1%} |"
        )
    lines += [
        "",
        "The score share (the score stage's busy seconds over the generate phase's seconds) is the cost "
        "that does not depend on what else the machine runs; the images/s of single runs on a shared "
        "machine vary more than it.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
