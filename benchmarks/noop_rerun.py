"""What nothing to do costs (issue 22.3): a finished job re-run, against a bare Ray start on the same machine.

    python benchmarks/noop_rerun.py [--prompts N] [--rounds R] [--workdir DIR] [--append]

configs/tiny.yaml (the tiny checkpoint, built and cached first) and ``N`` distinct prompts (1,500 by default,
mixed aspect ratios, as in the issue). The job is made once, in-process (``--executor local``); then ``R``
rounds, each in its own processes and in a rotating order so warm caches favour none:

  (0) ``import ray; ray.init(address='local', num_cpus=C, include_dashboard=False); ray.shutdown()``
      in ``python -c`` (``C``: the recipe's ``ray.num_cpus``; as benchmarks/throughput.py's (0))
  (a) the finished job re-run in-process: ``pixart-batch generate ... --executor local``
  (b) the finished job re-run through the Ray executor: ``pixart-batch generate ... --executor ray``
  (c) the README demo's first run: ``pixart-batch generate --config configs/tiny.yaml --prompts
      examples/prompts.txt --output FRESH`` (its default executor: in-process), into a new output each round
      (the tiny checkpoint already cached, as README's timing assumes)
  (d) the floor under (c): only the imports any PixArt generation in a fresh process needs, in ``python -c``:
      ``import torch; from transformers import T5EncoderModel; from diffusers import PixArtAlphaPipeline``
      (diffusers imports ``torch._dynamo``, and with it sympy, whatever the caller does); no goal

Wall seconds of each process (interpreter start included, as for (0)), medians over the rounds; goals as
ratios to (0)'s median: (a) ≤ 0.5, (b) ≤ 1.5, (c) ≤ 1.0. Each re-run must report ``nothing_to_do``
and (a) must end with no torch, diffusers, transformers or Ray imported, or the script fails. Printed
as a table; appended to benchmarks/RESULTS.md with ``--append``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "tiny.yaml"
DEMO_PROMPTS = ROOT / "examples" / "prompts.txt"
HEAVY = ("torch", "diffusers", "transformers", "ray")
GOALS = {"a": 0.5, "b": 1.5, "c": 1.0}
NAMES = {
    "0": "(0) bare ray.init + shutdown",
    "a": "(a) finished job re-run, in-process (`--executor local`)",
    "b": "(b) finished job re-run, Ray executor (`--executor ray`)",
    "c": "(c) README demo, first run (in-process)",
    "d": "(d) the imports any generation needs (torch, transformers' T5, diffusers' PixArt)",
}
IMPORTS = "import torch; from transformers import T5EncoderModel; from diffusers import PixArtAlphaPipeline"

WORDS = "red blue green small big old cat dog house tree boat city night sky forest river robot".split()
SHAPES = ["", " --ar 1:2", " --ar 2:1", " --hw 80:80", " --ar 3:4"]

CLI = """import json, sys, time
start = time.perf_counter()
from pixart_batch.cli import main
code = main(sys.argv[1:])
heavy = [m for m in HEAVY if m in sys.modules]
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "heavy": heavy}))
"""


def prompts_file(path: Path, count: int) -> Path:
    """``count`` distinct prompts (a number makes each one its own), mixed aspect ratios."""
    words = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(5)) for i in range(count)]
    lines = [f"a {text} number {i}{SHAPES[i % len(SHAPES)]}" for i, text in enumerate(words)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def timed(command: list[str], log: Path, env: dict[str, str]) -> tuple[float, dict]:
    """Wall seconds of one process, and the JSON line it printed last (if any)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"noop_rerun.py: {' '.join(command[:4])} ... exited {done.returncode}; see {log}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return seconds, json.loads(lines[-1]) if lines else {}


def generate(prompts: Path, output: Path, executor: str | None) -> list[str]:
    argv = ["generate", "--config", str(RECIPE), "--prompts", str(prompts), "--output", str(output)]
    argv += ["--executor", executor] if executor else []
    return [sys.executable, "-c", CLI.replace("HEAVY", repr(HEAVY)), *argv]


def check_noop(output: Path, printed: dict, executor: str, in_process: bool) -> None:
    report = json.loads((output / "run_report.json").read_text())
    if not report.get("nothing_to_do") or report["executor"] != executor or report["images_generated"]:
        raise SystemExit(f"noop_rerun.py: the {executor} re-run of {output} was not a no-op: {report}")
    if in_process and printed.get("heavy"):
        raise SystemExit(f"noop_rerun.py: the in-process no-op imported {printed['heavy']}")


def machine() -> str:
    return f"{platform.node() or 'unknown'}, {os.cpu_count()} cores"


def commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    status = ["git", "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (found.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def measure(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, list[float]]:
    """The first run, then ``args.rounds`` rounds of (0), (a), (b), (c), (d) in a rotating order."""
    from pixart_batch.config import load_config

    prompts = prompts_file(work / "prompts.txt", args.prompts)
    job = work / "job"
    if not (job / "run_report.json").is_file():
        seconds, _ = timed(generate(prompts, job, "local"), work / "first-run.log", env)
        print(f"first run of {args.prompts} prompts (in-process): {seconds:.1f} s", flush=True)
    timed(generate(prompts, job, "local"), work / "settle.log", env)  # a report of this version's own, once
    num_cpus = load_config(RECIPE).ray.num_cpus or os.cpu_count()
    options = f"address='local', num_cpus={num_cpus}, include_dashboard=False"
    ray_init = f"import ray; ray.init({options}); ray.shutdown()"
    times: dict[str, list[float]] = {key: [] for key in NAMES}
    for round_ in range(args.rounds):
        order = list(NAMES)[round_ % len(NAMES) :] + list(NAMES)[: round_ % len(NAMES)]
        for key in order:
            log = work / f"{key}-{round_}.log"
            if key == "0":
                seconds, _ = timed([sys.executable, "-c", ray_init], log, env)
            elif key == "d":
                seconds, _ = timed([sys.executable, "-c", IMPORTS], log, env)
            elif key == "c":
                demo = work / f"demo-{round_}"
                shutil.rmtree(demo, ignore_errors=True)
                seconds, _ = timed(generate(DEMO_PROMPTS, demo, None), log, env)
            else:
                executor = "local" if key == "a" else "ray"
                seconds, printed = timed(generate(prompts, job, executor), log, env)
                check_noop(job, printed, executor, key == "a")
            times[key].append(seconds)
            print(f"round {round_ + 1}: {NAMES[key]}: {seconds:.2f} s", flush=True)
    return times


def table(args: argparse.Namespace, times: dict[str, list[float]]) -> str:
    base = statistics.median(times["0"])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/noop_rerun.py " + " ".join(sys.argv[1:])
    lines = [
        f"### Nothing to do (issue 22.3) — {now}",
        "",
        f"Machine: {machine()}; commit {commit()}. Command: `{command.strip()}`.",
        f"configs/tiny.yaml; the finished job: {args.prompts} distinct prompts (mixed aspect ratios), made "
        f"once in-process; {args.rounds} rounds in a rotating order, each run its own process (wall seconds, "
        "interpreter start included); ratios of medians to (0)'s median.",
        "",
        "| run | median s | runs (s) | ratio to (0) | goal | pass |",
        "|---|---:|---|---:|---|---|",
    ]
    for key, name in NAMES.items():
        median = statistics.median(times[key])
        runs = ", ".join(f"{t:.2f}" for t in times[key])
        goal = f"≤ {GOALS[key]:g} × (0)" if key in GOALS else ""
        passed = ("yes" if median <= GOALS[key] * base else "no") if key in GOALS else ""
        lines.append(f"| {name} | {median:.2f} | {runs} | {median / base:.2f} | {goal} | {passed} |")
    lines += [
        "",
        "(a) and (b) decide from the output's files that nothing is left (settings, prompt bytes, plan, "
        "committed keys, stored captions) and start no executor, model or Ray; (a) imported no torch, "
        "diffusers, transformers or Ray (checked every round). (d) is the part of (c) no pipeline code "
        "can avoid: the libraries' own imports in a fresh process.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1500, help="prompts in the finished job")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (medians; default 3)")
    parser.add_argument("--workdir", type=Path, help="kept between calls: the job is made once")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="noop-rerun-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_DATA_DISABLE_PROGRESS_BARS="1")
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    print(f"workdir {work}", flush=True)
    from pixart_batch.tiny import cached_tiny_checkpoint

    cached_tiny_checkpoint(0)  # built outside the timings, as README's "once the checkpoint exists"
    text = table(args, measure(args, work, env))
    print(text)
    if args.append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
        print("appended to benchmarks/RESULTS.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
