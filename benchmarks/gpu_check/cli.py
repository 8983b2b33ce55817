"""Arguments and the section loop."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback

import torch

from gpu_check.common import free_memory
from gpu_check.context import Context
from gpu_check.sections import SECTIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="GPU check: pixart_batch at the real PixArt-XL-2 sizes, random weights, one card."
    )
    parser.add_argument(
        "--out", default=os.environ.get("OUT") or "gpu_check_out", help="results folder ($OUT)"
    )
    parser.add_argument(
        "--small", action="store_true", help="tiny sizes, 2 steps, 2 images (CPU float32 without CUDA)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(name for name, _ in SECTIONS),
        help="comma-separated subset of: " + ", ".join(name for name, _ in SECTIONS),
    )
    parser.add_argument(
        "--workdir", help="scratch folder for checkpoints (default: a new /tmp/gpu_check-* folder)"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep the checkpoints after the run")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {name for name, _ in SECTIONS})
    if unknown:
        parser.error(f"unknown sections: {', '.join(unknown)}")
    if not args.small and not torch.cuda.is_available():
        parser.error("no CUDA device: the real sizes need a GPU (use --small for the CPU smoke test)")

    ctx = Context(args)
    start = time.perf_counter()
    for name, fn in SECTIONS:
        if name not in wanted and name != "env":
            continue
        print(f"\n=== {name}", flush=True)
        began = time.perf_counter()
        try:
            fn(ctx)
            status = {"status": "ok"}
        except Exception as exc:  # keep going: the machine is expensive, other numbers still count
            traceback.print_exc()
            status = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
            free_memory()
        status["seconds"] = round(time.perf_counter() - began, 1)
        ctx.results["sections"][name] = status
        print(f"=== {name}: {status['status']} ({status['seconds']} s)", flush=True)
        ctx.write()
    ctx.results["meta"]["total_s"] = round(time.perf_counter() - start, 1)
    ctx.write()
    if not args.keep_workdir and not args.workdir:
        shutil.rmtree(ctx.workdir, ignore_errors=True)

    print("\n=== gpu_check.json\n" + (ctx.out / "gpu_check.json").read_text(), flush=True)
    print("=== gpu_check.md\n" + (ctx.out / "gpu_check.md").read_text(), flush=True)
    failed = [name for name, info in ctx.results["sections"].items() if info["status"] != "ok"]
    print(f"sections failed: {', '.join(failed) or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
