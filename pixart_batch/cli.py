"""``pixart-batch``: parse, build, run. Heavy imports happen inside the commands, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

from .api import OVERRIDES  # the flags' config keys (the API's keyword arguments of the same names)
from .config_tables import FLAGS, Flag
from .errors import UserError, first_line
from .signals import Terminated, install_signal_handlers

EXIT_CLOSED_PIPE = 141
"""Every command's exit status when its stdout is a pipe whose reader went away."""

TERMINATED = "pixart-batch: terminated (SIGTERM); committed work is kept; re-run the same command to resume"
"""What a run stopped by SIGTERM prints (exit 143)."""

VERIFY_EXIT_STATUS = """exit status:
  0  OK: nothing damaged and every planned image present (images committed under an earlier
     plan, e.g. before a smaller prompt file, are a note, not a problem)
  1  FAILED: a damaged or unreadable file, a duplicate key, a wrong sha256; or, with no run
     writing the output, planned images missing or failed (re-run generate)
  2  not an output, or another one-line error
  3  IN PROGRESS: a live run holds the output's lock (named: host, pid, start) and nothing read is
     damaged; its progress is printed (images committed of planned); verify again once it ends
  141  stdout closed early (a pipe into head), as for every command"""


def _add_config_flags(parser: argparse.ArgumentParser, *dests: str) -> None:
    """The flags that override config fields, each as its fields declare it (``setting(flag=...)``):
    its help, its type, its choices; the default None (a flag not given overrides nothing)."""
    for dest in dests:
        flag = FLAGS[dest]
        options: dict[str, Any] = {"dest": dest, "help": flag_help(flag)}
        if flag.kind is bool:
            options.update(action="store_true", default=None)
        elif flag.kind is not str:
            options["type"] = flag.kind
        if flag.facts.choices is not None:
            options["choices"] = flag.facts.choices
        parser.add_argument(flag.option, **options)


def flag_help(flag: Flag) -> str:
    """The first sentence of the fields' help, without reST markup, and the config keys it sets."""
    text = flag.facts.help.replace("``", "")
    first = re.split(r"(?<=[.])\s", text, maxsplit=1)[0]
    return f"{first} ({', '.join(flag.keys)})".replace("%", "%%")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``generate`` and ``encode``: the recipe, the prompts, the output, and the run's config flags."""
    parser.add_argument(
        "--config", help="YAML recipe (configs/tiny.yaml, configs/pixart-alpha-1024.yaml, ...)"
    )
    parser.add_argument(
        "--prompts",
        required=True,
        help="prompt file (.txt with --ar/--hw flags, .jsonl, .csv, .parquet, .yaml), a datasets "
        "save_to_disk folder, a folder or glob of tables, or hf://datasets/ORG/NAME[/path]",
    )
    _add_column_arguments(parser)
    parser.add_argument("--output", required=True, help="output directory (local path, s3:// or gs://)")
    _add_config_flags(parser, "model", "store", "max_sequence_length", "verbose", "progress_interval")
    _add_config_flags(parser, "executor")


COLUMN_FLAGS = ("prompt_column", "id_column", "label_column", "negative_prompt_column")
"""The column flags' ``dest``s, each a :class:`~pixart_batch.prompts.PromptSource` field of that name."""


def _add_column_arguments(parser: argparse.ArgumentParser) -> None:
    for dest, default in zip(COLUMN_FLAGS, ("prompt", "id", "label", "negative_prompt"), strict=True):
        flag = "--" + dest.replace("_", "-")
        text = f"table column (or .jsonl key) of the {default} field ({default})"
        parser.add_argument(flag, metavar="COLUMN", help=text)


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command and its flags (nothing heavy imported: ``--help`` is instant)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pixart-batch", description="Batch PixArt-α / PixArt-Σ image datasets on Ray."
    )
    parser.add_argument("--version", action="version", version=f"pixart-batch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(commands)
    _add_inspection_commands(commands)
    _add_plan_command(commands)
    _add_dataset_commands(commands)
    _add_tiny_command(commands)
    return parser


Commands = Any
"""``argparse``'s sub-parsers action (``add_parser``), a private class of argparse."""


def _add_run_commands(commands: Commands) -> None:
    """``generate`` and ``encode``."""
    generate = commands.add_parser("generate", help="prompts → embedding store → images → sharded dataset")
    _add_run_arguments(generate)
    _add_config_flags(generate, "seed", "images_per_prompt", "batch_size", "steps", "guidance_scale")
    _add_config_flags(generate, "scheduler", "image_format", "output_format")
    generate.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, clean and plan only (writes the plan; no models run)",
    )
    encode = commands.add_parser("encode", help="build the embedding store only")
    _add_run_arguments(encode)


def _add_inspection_commands(commands: Commands) -> None:
    """``status`` and ``verify``: read an output, write nothing."""
    status = commands.add_parser("status", help="planned / embedded / done / failed images per bucket")
    status.add_argument("output")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify = commands.add_parser(
        "verify",
        help="check every file, key, sha256 and planned image; exit 1 on damage or missing images",
        description="Check every file, key, sha256 and planned image of OUTPUT (a line per finding).",
        epilog=VERIFY_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("output")


def _add_plan_command(commands: Commands) -> None:
    """``plan``: the estimate of a run, before it starts."""
    plan = commands.add_parser(
        "plan", help="images per bucket, GPU-hours, cost and sizes of a run, before it starts"
    )
    plan.add_argument("prompts", metavar="PROMPTS", help="prompt file, folder or hf:// dataset (as generate)")
    _add_column_arguments(plan)
    plan.add_argument("--config", help="YAML recipe (its estimate: section sets the GPU kind and price)")
    _add_config_flags(plan, "model", "images_per_prompt", "steps", "gpu", "usd_per_gpu_hour")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_dataset_commands(commands: Commands) -> None:
    """``gallery``, ``export`` and ``score``: an existing output viewed, filtered, scored."""
    from .config import OUTPUT_FORMATS

    gallery = commands.add_parser(
        "gallery", help="a static HTML gallery of a sample of the images in OUTPUT/gallery/"
    )
    gallery.add_argument("output")
    gallery.add_argument(
        "--per-bucket", type=int, default=48, help="images per bucket or label page at most (48)"
    )
    gallery.add_argument("--max-images", type=int, default=2000, help="images shown in all at most (2000)")
    gallery.add_argument(
        "--thumb-size", type=int, default=256, help="longest side of a thumbnail in pixels (256)"
    )
    gallery.add_argument("--format", choices=("webp", "jpeg"), default="webp", help="thumbnail format (webp)")
    gallery.add_argument(
        "--where", metavar="EXPR", help="preview an export: what EXPR keeps and drops (as export)"
    )

    export = commands.add_parser(
        "export", help="the rows that satisfy --where, as a new self-contained dataset"
    )
    export.add_argument("output", help="the source output (only read)")
    export.add_argument(
        "--where", required=True, help="e.g. \"clip_score >= 28 and label in ['cat', 'dog']\""
    )
    export.add_argument("--to", required=True, help="the new dataset's directory (new or empty)")
    export.add_argument(
        "--format", choices=OUTPUT_FORMATS, help="shard format of the export (default: the source's)"
    )
    export.add_argument("--per-label", type=int, help="at most N rows per label (the first N in shard order)")
    _add_score_command(commands)


def _add_score_command(commands: Commands) -> None:
    """``score``: the API's arguments of ``api.score`` (not config overrides: the recipe's
    ``stages.score`` section is the base they change)."""
    score = commands.add_parser(
        "score", help="add clip_score (and aesthetic_score) to an existing output's shards"
    )
    score.add_argument("output")
    score.add_argument(
        "--config", help="YAML recipe whose stages.score section gives the model, head, batch size, dtype"
    )
    score.add_argument("--model", help="CLIP model: hub id, local directory or 'tiny' (stages.score.model)")
    score.add_argument("--revision", help="hub revision of the CLIP model (stages.score.revision)")
    score.add_argument(
        "--aesthetic-head",
        help="safetensors linear head over the image embedding (stages.score.aesthetic_head)",
    )
    score.add_argument("--batch-size", type=int, help="images per CLIP call (stages.score.batch_size)")


def _add_tiny_command(commands: Commands) -> None:
    """``make-tiny-checkpoint``."""
    from .families import FAMILY_NAMES, SCHEDULERS

    tiny = commands.add_parser(
        "make-tiny-checkpoint", help="write a random tiny PixArt checkpoint (diffusers layout)"
    )
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--family",
        default="alpha",
        choices=tuple(FAMILY_NAMES),
        help="PixArtAlphaPipeline or PixArtSigmaPipeline",
    )
    tiny.add_argument(
        "--scheduler",
        default="dpm-solver++",
        choices=tuple(SCHEDULERS),
        help="the scheduler the checkpoint ships (lcm as PixArt-LCM, ddpm as PixArt-DMD)",
    )
    tiny.add_argument(
        "--size",
        default="tiny",
        choices=("tiny", "small"),
        help="tiny (tests) or small (real block structure, for CPU benchmarks)",
    )


def _overrides(args: argparse.Namespace) -> dict:
    return {key: getattr(args, dest, None) for dest, keys in OVERRIDES.items() for key in keys}


def _columns(args: argparse.Namespace) -> dict[str, Any]:
    """The column flags given, as the API's keyword arguments."""
    return {dest: getattr(args, dest) for dest in COLUMN_FLAGS if getattr(args, dest) is not None}


def run_command(args: argparse.Namespace) -> int:
    """One command through :mod:`pixart_batch.api`: its result printed (``--json``: as JSON), its exit
    status."""
    from . import api

    if args.command == "make-tiny-checkpoint":
        from .tiny import build_tiny_checkpoint

        path = build_tiny_checkpoint(
            args.directory, seed=args.seed, family=args.family, scheduler=args.scheduler, size=args.size
        )
        print(path)
        return 0
    if args.command == "status":
        report = api.status(args.output)
        print(report.as_json() if args.json else str(report))
        return 0
    if args.command == "plan":
        import json

        from .estimate import format_estimate

        config = api.load_run_config(args.config, _overrides(args))
        estimate = api.plan(args.prompts, config=config, **_columns(args))
        print(json.dumps(estimate.to_dict(), indent=2) if args.json else format_estimate(estimate))
        return 0
    if args.command == "verify":
        result = api.verify(args.output)
        print("\n".join(result.lines()))
        return result.exit_code
    if args.command == "export":
        print(
            api.export(
                args.output, args.where, args.to, format=args.format, per_label=args.per_label
            ).summary()
        )
        return 0
    if args.command == "score":
        config = api.load_run_config(args.config)
        configure_logging(config.console.verbose)
        given = {
            "revision": args.revision,
            "aesthetic_head": args.aesthetic_head,
            "batch_size": args.batch_size,
        }
        api.score(args.output, config=config, model=args.model, **given)
        return 0
    if args.command == "gallery":
        sizes = {"per_bucket": args.per_bucket, "max_images": args.max_images, "thumb_size": args.thumb_size}
        made = api.gallery(args.output, **sizes, format=args.format, where=args.where)
        for shard in made.skipped_shards:
            print(
                f"pixart-batch: unreadable shard left out of the gallery: {shard} (pixart-batch verify)",
                file=sys.stderr,
            )
        print(f"gallery: {made.shown} of {made.images} images in {made.buckets} buckets: {made.path}")
        if made.kept is not None:
            print(f"gallery: --where keeps {made.kept} of {made.images} images (kept.html, dropped.html)")
        return 0
    return _generate(args)


def _generate(args: argparse.Namespace) -> int:
    """``generate`` / ``encode``: exit status 1 when images failed (a re-run retries them)."""
    from . import api

    check_job_paths(args)
    config = api.load_run_config(args.config, _overrides(args))
    configure_logging(config.console.verbose)
    if args.command == "encode":
        report = api.encode(args.prompts, args.output, config=config, **_columns(args))
    else:
        report = api.generate(
            args.prompts, args.output, config=config, dry_run=args.dry_run, **_columns(args)
        )
    if report.images_failed:
        print(
            f"pixart-batch: {report.images_failed} images failed (see {args.output}/failures/); "
            "re-run the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def check_job_paths(args: argparse.Namespace) -> None:
    """Under ``ray job submit`` the driver runs in Ray's temporary copy of the working directory: a
    relative ``--output`` / ``--prompts`` / ``--store`` would resolve there and vanish with the job."""
    import os

    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        return
    for flag in ("output", "prompts", "store"):
        value = getattr(args, flag, None)
        if value and "://" not in value and not os.path.isabs(os.path.expanduser(value)):
            raise UserError(
                f"--{flag} {value}: a relative path inside a Ray job resolves in the job's temporary "
                "working directory and is lost when the job ends; give an absolute path on storage every "
                "node sees, or s3:// / gs://"
            )


def configure_logging(verbose: bool) -> None:
    """The package's logger on the console: warnings (a failing batch, with the traceback of its
    original exception, once per group); with ``--verbose`` also INFO lines (each committed shard,
    each failed image) and the third-party import warnings the package otherwise keeps quiet
    (:data:`pixart_batch.IMPORT_NOISE_LOGGERS`)."""
    from . import quiet_import_noise

    quiet_import_noise(not verbose)
    logger = logging.getLogger("pixart_batch")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[pixart-batch] %(levelname)s: %(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def _stdout_closed() -> int:
    """The reader of stdout went away (``status OUT | head -1``): no traceback, and nothing more written
    there (stdout points at /dev/null, so Python's own flush at exit finds no pipe); exit 141
    (128 + SIGPIPE), as ``cat`` killed by the signal would."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    from .api import ray_token_error, user_cause
    from .errors import SystemicFailure
    from .storage import StorageFullError

    args = build_parser().parse_args(argv)
    install_signal_handlers()
    try:
        code = run_command(args)
        sys.stdout.flush()  # a reader that went away (`| head -1`) shows here, not at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print("pixart-batch: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print(TERMINATED, file=sys.stderr)
        return 143
    except Exception as exc:
        cause = user_cause(exc)
        if isinstance(cause, UserError):
            print(f"pixart-batch: error: {first_line(cause, limit=None)}", file=sys.stderr)
            return 2
        if isinstance(cause, StorageFullError):
            print(f"pixart-batch: error: {first_line(cause, limit=None)}", file=sys.stderr)
            return 1
        if isinstance(cause, SystemicFailure):
            print(f"pixart-batch: {first_line(cause, limit=None)}", file=sys.stderr)
            return 1
        if isinstance(cause, Terminated):
            print(TERMINATED, file=sys.stderr)
            return 143
        token = ray_token_error(exc)
        if token:
            print(f"pixart-batch: error: {token}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
