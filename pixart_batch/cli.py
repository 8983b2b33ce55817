"""``pixart-batch``: parse, build, run. Heavy imports happen inside the commands, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import UserError


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe (configs/tiny.yaml, configs/pixart-alpha-1024.yaml, ...)")
    parser.add_argument("--prompts", required=True, help="prompt file: .txt (with --ar/--hw flags), .jsonl, .csv or .parquet")
    parser.add_argument("--output", required=True, help="output directory (local path, s3:// or gs://)")
    parser.add_argument("--model", help="hub id or local checkpoint directory, or 'tiny' (overrides model.path)")
    parser.add_argument("--store", help="embedding store root (default OUTPUT/embeddings)")
    parser.add_argument("--max-sequence-length", type=int, help="T5 token limit (120 for α, 300 for Σ)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixart-batch", description="Batch PixArt-α / PixArt-Σ image datasets on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="prompts → embedding store → images → sharded dataset")
    _add_run_arguments(generate)
    generate.add_argument("--seed", type=int, help="run seed (generation.seed)")
    generate.add_argument("--images-per-prompt", type=int, help="images per prompt (generation.images_per_prompt)")
    generate.add_argument("--batch-size", type=int, help="DiT and VAE batch size (stages.denoise/decode.batch_size)")
    generate.add_argument("--steps", type=int, help="denoising steps (generation.num_inference_steps)")
    generate.add_argument("--guidance-scale", type=float, help="CFG scale (generation.guidance_scale); <= 1 runs without CFG")
    generate.add_argument("--scheduler", help="checkpoint (default), dpm-solver++, sa-solver, euler, euler-ancestral, ddim, ddpm, lcm")
    generate.add_argument("--image-format", choices=("png", "jpeg", "webp"), help="image encoding (output.image_format)")
    generate.add_argument("--dry-run", action="store_true", help="validate, clean and plan only (writes the plan; no models run)")

    encode = commands.add_parser("encode", help="build the embedding store only")
    _add_run_arguments(encode)

    status = commands.add_parser("status", help="planned / embedded / done / failed images per bucket")
    status.add_argument("output")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    verify = commands.add_parser("verify", help="check every file, key, sha256 and count; non-zero exit on any problem")
    verify.add_argument("output")

    tiny = commands.add_parser("make-tiny-checkpoint", help="write a random tiny PixArt checkpoint (diffusers layout)")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--family", default="alpha", choices=("alpha", "sigma"), help="PixArtAlphaPipeline or PixArtSigmaPipeline")
    tiny.add_argument(
        "--scheduler",
        default="dpm-solver++",
        choices=("dpm-solver++", "sa-solver", "euler", "euler-ancestral", "ddim", "ddpm", "lcm"),
        help="the scheduler the checkpoint ships (lcm as PixArt-LCM, ddpm as PixArt-DMD)",
    )
    tiny.add_argument("--size", default="tiny", choices=("tiny", "small"), help="tiny (tests) or small (real block structure, for CPU benchmarks)")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    get = lambda name: getattr(args, name, None)  # noqa: E731
    return {
        "model.path": get("model"),
        "model.max_sequence_length": get("max_sequence_length"),
        "output.store": get("store"),
        "output.image_format": get("image_format"),
        "generation.seed": get("seed"),
        "generation.images_per_prompt": get("images_per_prompt"),
        "generation.num_inference_steps": get("steps"),
        "generation.guidance_scale": get("guidance_scale"),
        "generation.scheduler": get("scheduler"),
        "stages.denoise.batch_size": get("batch_size"),
        "stages.decode.batch_size": get("batch_size"),
    }


def run_command(args: argparse.Namespace) -> int:
    if args.command == "make-tiny-checkpoint":
        from .tiny import build_tiny_checkpoint

        path = build_tiny_checkpoint(args.directory, seed=args.seed, family=args.family, scheduler=args.scheduler, size=args.size)
        print(path)
        return 0

    if args.command == "status":
        import json

        from .audit import format_status, status

        report = status(args.output)
        print(json.dumps(report, indent=2) if args.json else format_status(report))
        return 0
    if args.command == "verify":
        from .audit import verify

        result = verify(args.output)
        for problem in result.problems:
            print(f"problem: {problem}")
        print(f"{'OK' if result.ok else 'FAILED'}: {result.images} images in {result.files} files, {len(result.problems)} problems")
        return 0 if result.ok else 1

    from .config import load_config, with_overrides
    from .pipeline import run_generate

    config = with_overrides(load_config(args.config), _overrides(args))
    report = run_generate(config, args.prompts, args.output, encode_only=args.command == "encode", dry_run=getattr(args, "dry_run", False))
    if report.get("images_failed"):
        print(
            f"pixart-batch: {report['images_failed']} images failed (see {args.output}/failures/); "
            "re-run the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except UserError as exc:
        print(f"pixart-batch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixart-batch: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
