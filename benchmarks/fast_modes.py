"""Speed and quality of the DiT's opt-in fast modes against exact mode, same seeds and prompts.

For each mode (exact; each ``stages.denoise.step_cache``; ``fp8`` where CUDA >= 8.9; optionally the
exact ``compile`` path) the pipeline's own Denoiser denoises the same prompts and seeds in batches,
after one warm-up batch (CUDA or compile only); the exact VAE decodes every result. Reported: s/image
(denoise only; the least of ``--repeats`` passes; process CPU time on the CPU, wall time on CUDA),
speedup over exact, and PSNR / max |Δ| of the uint8 pixels against exact mode.

    python benchmarks/fast_modes.py [--size small] [--device cpu|cuda] [--images 4] [--steps 20]
        [--batch 4] [--compile] [--no-append]

The table is printed and, unless ``--no-append``, appended to benchmarks/RESULTS.md with the date,
machine and command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pixart_batch.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "a red fox in the snow, golden light",
    "a cute cat sitting on a chair, oil painting",
    "an ancient castle on a mountain at night, stars",
    "portrait of an old man with a white beard",
    "a small boat on a lake, morning fog",
    "a futuristic city street in the rain, neon lights",
    "a bowl of fruit on a wooden table",
    "a dragon flying over the ocean",
]
STEP_CACHES = {
    "first-block": {"step_cache": "first-block"},
    "pab": {"step_cache": "pab"},
    "taylorseer": {"step_cache": "taylorseer"},
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    processor = platform.processor() or platform.machine()
    return f"CPU {processor}, {os.cpu_count()} cores (torch {torch.__version__})"


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        choices=("tiny", "small"),
        default="small",
        help="random checkpoint size (pixart_batch.tiny)",
    )
    parser.add_argument("--model", help="a checkpoint directory or hub id instead of a random one")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", default=None, help="DiT/VAE dtype (default float32 on CPU, float16 on CUDA)"
    )
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--threshold", type=float, default=0.05, help="stages.denoise.step_cache_threshold (first-block)"
    )
    parser.add_argument(
        "--interval", type=int, default=2, help="stages.denoise.step_cache_interval (pab, taylorseer)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per mode; the least counts")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=tuple(STEP_CACHES),
        default=tuple(STEP_CACHES),
        help="step caches to run",
    )
    parser.add_argument("--compile", action="store_true", help="also time the exact torch.compile path")
    parser.add_argument(
        "--no-append", action="store_true", help="print only; do not append to benchmarks/RESULTS.md"
    )
    return parser.parse_args()


def run_spec(args: argparse.Namespace, dtype: str) -> RunSpec:
    """The run's spec: the chosen (or a random) checkpoint, ``--steps``, the DiT at ``--batch`` and
    ``dtype``, every model stage on the GPU with ``--device cuda``."""
    from pixart_batch.config import DenoiseStageConfig, GenerationConfig, ModelConfig, RunConfig, StagesConfig
    from pixart_batch.spec import RunSpec
    from pixart_batch.tiny import cached_tiny_checkpoint

    gpus = 1.0 if args.device == "cuda" else 0.0
    model = args.model or str(cached_tiny_checkpoint(0, size=args.size))
    stage = {"batch_size": args.batch, "num_gpus": gpus, "dtype": dtype}
    config = RunConfig(
        model=ModelConfig(path=model),
        generation=GenerationConfig(num_inference_steps=args.steps),
        stages=dataclasses.replace(
            StagesConfig(),
            encode=dataclasses.replace(StagesConfig().encode, num_gpus=gpus),
            denoise=DenoiseStageConfig(**stage),
            decode=dataclasses.replace(StagesConfig().decode, num_gpus=gpus, dtype=dtype),
        ),
    )
    return RunSpec.build(config)


def mode_runner(args: argparse.Namespace, spec: RunSpec) -> Callable[..., tuple[float, np.ndarray]]:
    """``run(name, **fields)``: the seconds per image of the Denoiser with ``fields`` over the spec's
    denoise spec, and the pixels its latents decode to. The prompts are encoded once, here."""
    import torch

    from pixart_batch import schema as S
    from pixart_batch.stages.decode import Decoder
    from pixart_batch.stages.denoise import Denoiser
    from pixart_batch.stages.encode import TextEncoder
    from pixart_batch.tensors import tensor_to_bytes

    side = spec.geometry.native_size
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    hidden, counts, _ = TextEncoder(spec.encode_spec()).encode([*prompts, ""])
    blobs = [tensor_to_bytes(hidden[i, :c].float().cpu()) for i, c in enumerate(counts)]
    base = dataclasses.replace(spec.denoise_spec(), embedding_dtype="float32")
    decoder = Decoder(spec.decode_spec())

    def rows(indices: list[int]) -> dict[str, list]:
        return {
            S.NUM_TOKENS: [counts[i] for i in indices],
            S.PROMPT_EMBEDDING: [blobs[i] for i in indices],
            S.NEGATIVE_NUM_TOKENS: [counts[-1]] * len(indices),
            S.NEGATIVE_EMBEDDING: [blobs[-1]] * len(indices),
            S.SEED: [1000 + i for i in indices],
        }

    # On a shared CPU wall time measures the neighbours; the process's CPU time (all threads) measures
    # the work. On CUDA: wall time.
    clock = time.perf_counter if args.device == "cuda" else time.process_time

    def run(name: str, **fields: object) -> tuple[float, np.ndarray]:
        denoiser = Denoiser(dataclasses.replace(base, **fields))
        batches = [
            list(range(i, min(i + args.batch, args.images))) for i in range(0, args.images, args.batch)
        ]
        if args.device == "cuda" or fields.get("compile"):
            denoiser.denoise(rows(batches[0]), side, side)  # warm-up (and compilation)
        best = float("inf")
        for _ in range(args.repeats):  # the least of the repeats: the others waited for the machine
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = clock()
            latents = [denoiser.denoise(rows(batch), side, side) for batch in batches]
            if args.device == "cuda":
                torch.cuda.synchronize()
            best = min(best, (clock() - start) / args.images)
        seconds = best
        pixels = np.concatenate([decoder.decode(part.float(), side, side) for part in latents])
        print(f"{name}: {seconds:.3f} s/image", file=sys.stderr)
        return seconds, pixels

    return run


def modes_to_time(args: argparse.Namespace) -> tuple[dict[str, dict[str, object]], str]:
    """``(modes, fp8_note)``: each mode's name and denoise fields (exact first), and why fp8 is not
    among them ("" when it is)."""
    import torch

    from pixart_batch.config import DenoiseStageConfig
    from pixart_batch.fast import FP8_MIN_CAPABILITY

    modes: dict[str, dict[str, object]] = {"exact": {}}
    if args.compile:
        modes["exact + compile"] = {"compile": True}
    for name, fields in ((name, STEP_CACHES[name]) for name in args.modes):
        extra = (
            {"step_cache_threshold": args.threshold}
            if name == "first-block"
            else {"step_cache_interval": args.interval}
        )
        modes[DenoiseStageConfig(**fields, **extra).fast_mode] = {**fields, **extra}  # type: ignore[arg-type]
    fp8_note = "fp8: not measured (needs CUDA compute capability >= 8.9)"
    if args.device == "cuda" and torch.cuda.get_device_capability() >= FP8_MIN_CAPABILITY:
        modes["fp8"] = {"fp8": True}
        fp8_note = ""
    return modes, fp8_note


def results_table(results: dict[str, tuple[float, np.ndarray]], device: str) -> str:
    """The Markdown table: each mode's s/image, speedup and pixel quality against exact mode."""
    exact_s, exact_px = results["exact"]
    unit = "GPU wall" if device == "cuda" else "CPU"
    lines = [
        f"| mode | {unit} s/image | speedup | PSNR vs exact (dB) | max abs diff (uint8) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (seconds, pixels) in results.items():
        quality = psnr(pixels, exact_px)
        delta = int(np.abs(pixels.astype(np.int16) - exact_px.astype(np.int16)).max())
        shown = "∞" if quality == float("inf") else f"{quality:.1f}"
        lines.append(f"| {name} | {seconds:.3f} | {exact_s / seconds:.2f}× | {shown} | {delta} |")
    return "\n".join(lines)


def results_section(args: argparse.Namespace, side: int, dtype: str, table: str, fp8_note: str) -> str:
    """The section appended to benchmarks/RESULTS.md: date, machine, command, settings, the table."""
    command = "python benchmarks/" + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    clock_note = (
        "wall time"
        if args.device == "cuda"
        else "CPU time of all threads: wall time on a shared machine measures its neighbours; still noisy"
    )
    return (
        "\n## DiT fast modes against exact mode "
        f"({args.size if not args.model else args.model}, {args.device})\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine(args.device)}; "
        f"command: `{command}`. "
        f"{args.images} images ({side}×{side}, {args.steps} steps, CFG 4.5, {dtype}, "
        f"batches of {args.batch}), "
        "the same prompts and seeds in every mode; s/image is the DiT alone "
        "(after a warm-up batch on CUDA), the least of "
        f"{args.repeats} passes ({clock_note}); "
        "pixels are decoded by the same exact VAE.\n\n"
        + table
        + "\n"
        + (f"\n{fp8_note}.\n" if fp8_note else "")
    )


def main() -> None:
    args = parse_args()

    import torch

    torch.set_grad_enabled(False)
    dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    spec = run_spec(args, dtype)
    run = mode_runner(args, spec)
    modes, fp8_note = modes_to_time(args)
    results = {name: run(name, **fields) for name, fields in modes.items()}
    table = results_table(results, args.device)
    print(table)
    if fp8_note:
        print(fp8_note)
    if args.no_append:
        return
    section = results_section(args, spec.geometry.native_size, dtype, table, fp8_note)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as handle:
        handle.write(section)


if __name__ == "__main__":
    main()
