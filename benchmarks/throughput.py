"""Throughput: pixart_batch against the plain diffusers loop a user would write, back to back.

    python benchmarks/throughput.py --preset tiny-cpu|small-cpu|xl-512|xl-1024 [--prompts N] [--out DIR]
                                    [--workdir DIR] [--append] [--small]

Presets:

  tiny-cpu   configs/tiny.yaml, the tiny checkpoint, the README demo's examples/prompts.txt
  small-cpu  a random checkpoint with PixArt-α's real block structure at a small width
             (``build_tiny_checkpoint(dir, size="small")``), 64 generated prompts by default
  xl-512 /   PixArt-XL-2 transformer + SD VAE at the hub configs' sizes, random weights, built by
  xl-1024    benchmarks/gpu_check.py's builders, with a T5 of T5-XXL's width (4096) but 2 layers
             (saving 24 layers takes minutes; T5 is < 1 % of a GPU run's time) and a locally built
             tokenizer; configs/one-gpu.yaml (DiT fp16 batch 8); 20 generated prompts by default.
             ``--small`` builds gpu_check's --small sizes instead (a CPU smoke test of this path)

Measured, each as its own process, one after the other on one prompt file with mixed aspect ratios:

  (0) ``python -c "import ray; ray.init(address='local', num_cpus=N, include_dashboard=False);
      ray.shutdown()"`` (a bare Ray start and stop)
  (a) the plain diffusers loop (``--loop``, below): ``PixArtAlphaPipeline.from_pretrained``, prompts
      grouped by requested size, batches of the config's DiT batch size per group, one
      ``torch.Generator("cpu").manual_seed(seed)`` per image (the seed and size pixart_batch plans for
      that image: ``expansion.image_seed`` / ``expansion.choose_size``), diffusers' own resolution
      binning, each image PNG-encoded and written to a file. No Ray.
  (b) ``pixart-batch generate --config C --prompts P --output O``
  (c) the same command again (nothing to do)
  (d) the same with 3 prompts appended to a copy of the prompt file, into the same output

Wall time is from process start to exit (imports and model load included). The generate phase's
images/s are (a)'s images over its time after the model loaded, and OUTPUT/run_report.json's
``images_per_second`` for (b)/(d) (the run's generate phase: first batch in to last shard committed).
Per-stage busy seconds are the run report's ``stage_busy_seconds``. Peak RSS: every 50 ms the
RSS of the process and all its descendants is summed (Ray's GCS, raylet and workers are started by
the driver, workers as children of the raylet, so they are descendants of the driver); shared pages
(torch's libraries in every worker) count once per process, so this overstates physical memory.
On a GPU, ``nvidia-smi`` is sampled every 0.5 s: peak memory used on the card and mean utilisation
over the process's life (the whole card: run nothing else on it).

Without ray installed (the lent GPU machine: Ray's wheel is too big to carry there) (0) and
(b)-(d) are skipped with a line saying so; benchmarks/gpu_check.py's ``throughput`` section
measures the stages themselves (Denoiser + Decoder) against diffusers there.

The table is printed and written to ``--out`` (throughput.md / .json); only with ``--append`` is it
also appended to the tracked benchmarks/RESULTS.md, with the date, machine, commit and command.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRESETS = ("tiny-cpu", "small-cpu", "xl-512", "xl-1024")
DEFAULT_PROMPTS = {"tiny-cpu": None, "small-cpu": 64, "xl-512": 20, "xl-1024": 20}
ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")  # --ar height:width; cycled over the prompts
EXTRA_PROMPTS = (
    "a lighthouse on a cliff at dawn, oil painting --ar 3:4",
    "a bowl of ramen on a wooden table, studio photo",
    "a paper boat on a rainy street, macro shot --ar 16:9",
)
RAY_MISSING = "ray not installed: (0) and (b)-(d) skipped"

if TYPE_CHECKING:
    from pixart_batch.config import RunConfig


# --------------------------------------------------------------------------- (a): the plain loop


def loop_main(args: argparse.Namespace) -> int:
    """The loop a user would write with diffusers (run as its own process by the benchmark)."""
    import torch
    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

    from pixart_batch.buckets import aspect_ratio_table, read_model_geometry
    from pixart_batch.config import load_config
    from pixart_batch.expansion import choose_size, image_key, image_seed
    from pixart_batch.prompts import read_prompts

    config = load_config(args.config)
    generation, denoise = config.generation, config.stages.denoise
    device = "cuda" if denoise.num_gpus > 0 and torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, denoise.dtype)
    load_start = time.perf_counter()
    index = json.loads((Path(config.model.path) / "model_index.json").read_text())
    cls = PixArtSigmaPipeline if index["_class_name"] == "PixArtSigmaPipeline" else PixArtAlphaPipeline
    pipe = cls.from_pretrained(config.model.path, torch_dtype=dtype, use_safetensors=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    geometry = read_model_geometry(config.model.path)
    table = aspect_ratio_table(geometry.sample_size)
    groups: dict[tuple[int, int], list[tuple[str, str, int]]] = {}
    for record in read_prompts(args.prompts):
        size = choose_size(record, generation, geometry, table)
        for i in range(generation.images_per_prompt):
            key = image_key(record.prompt_id, i)
            groups.setdefault((size.height, size.width), []).append(
                (key, record.prompt, image_seed(generation.seed, record.prompt_id, i))
            )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    images = 0
    for (height, width), rows in sorted(groups.items()):
        for first in range(0, len(rows), denoise.batch_size):
            batch = rows[first : first + denoise.batch_size]
            result = pipe(
                prompt=[prompt for _, prompt, _ in batch],
                negative_prompt=generation.negative_prompt,
                generator=[torch.Generator("cpu").manual_seed(seed) for _, _, seed in batch],
                height=height,
                width=width,
                num_inference_steps=generation.num_inference_steps,
                guidance_scale=generation.guidance_scale,
                clean_caption=config.model.clean_caption,
                use_resolution_binning=True,  # generate at the bucket, resize back to the asked size
            )
            for (key, _, _), image in zip(batch, result.images, strict=True):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                (out / f"{key}.png").write_bytes(buffer.getvalue())
                images += 1
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    report = {
        "images": images,
        "load_seconds": round(start - load_start, 3),
        "generate_seconds": round(seconds, 3),
        "images_per_second": images / seconds if seconds > 0 else 0.0,
        "peak_gpu_memory_GB": round(torch.cuda.max_memory_allocated() / 1e9, 2) if device == "cuda" else None,
    }
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- measuring a process


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def _gpu_sample() -> tuple[float, float] | None:
    """``(memory used MB, utilisation %)`` of GPU 0 by nvidia-smi, None without one."""
    try:
        line = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=memory.used,utilization.gpu",
                "--format=csv,noheader,nounits",
                "--id=0",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        used, util = (float(x) for x in line.split(","))
        return used, util
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def measure(name: str, command: list[str], log: Path, gpu: bool, env: dict | None = None) -> dict:
    """Run ``command`` to completion: wall seconds, exit status, peak tree RSS, GPU peak and mean use."""
    print(f"--- ({name}) {shlex.join(command)}", flush=True)
    peak_rss = 0
    gpu_memory: list[float] = []
    gpu_util: list[float] = []
    done = threading.Event()
    with open(log, "w") as handle:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)

        def sample_gpu() -> None:
            while not done.is_set():
                found = _gpu_sample()
                if found:
                    gpu_memory.append(found[0])
                    gpu_util.append(found[1])
                done.wait(0.5)

        sampler = threading.Thread(target=sample_gpu, daemon=True) if gpu else None
        if sampler:
            sampler.start()
        while process.poll() is None:
            peak_rss = max(peak_rss, _tree_rss(process.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - start
        done.set()
        if sampler:
            sampler.join()
    result = {
        "wall_s": round(wall, 2),
        "exit": process.returncode,
        "peak_rss_MB": round(peak_rss / 1e6, 1),
        "log": str(log),
    }
    if gpu_memory:
        result.update(gpu_peak_MB=max(gpu_memory), gpu_util_mean=round(sum(gpu_util) / len(gpu_util), 1))
    print(f"    {result}", flush=True)
    if process.returncode != 0:
        print(log.read_text()[-3000:], flush=True)
    return result


# --------------------------------------------------------------------------- setup


def prompt_texts() -> list[str]:
    """Real prompts without their size flags: /work/shared/prompts if present, else examples/prompts.txt."""
    from pixart_batch.prompts import parse_prompt_line

    sources = sorted(Path("/work/shared/prompts").glob("*.txt")) or [ROOT / "examples" / "prompts.txt"]
    texts: list[str] = []
    for source in sources:
        for line in source.read_text(encoding="utf-8").splitlines():
            if line.strip():
                text = parse_prompt_line(line, str(source))[0]
                if text and text not in texts and len(text) > 10:
                    texts.append(text)
    return texts


def write_prompts(path: Path, count: int) -> None:
    texts = prompt_texts()
    lines = []
    for i in range(count):
        text = texts[i % len(texts)]
        if i >= len(texts):
            text += f", variation {i // len(texts)}"
        lines.append(f"{text} --ar {ASPECT_RATIOS[i % len(ASPECT_RATIOS)]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_checkpoint(preset: str, work: Path, small: bool) -> tuple[Path, str]:
    """``(checkpoint directory, base config)`` of a preset, built before anything is timed."""
    if preset == "tiny-cpu":
        from pixart_batch.tiny import cached_tiny_checkpoint

        return cached_tiny_checkpoint(0), "configs/tiny.yaml"
    if preset == "small-cpu":
        from pixart_batch.tiny import build_tiny_checkpoint

        return build_tiny_checkpoint(work / "small-checkpoint", size="small"), "configs/tiny.yaml"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check  # the XL builders: reused, not copied

    ctx = gpu_check.Context(
        argparse.Namespace(small=small, out=str(work / "gpu_check"), workdir=str(work / "xl"))
    )
    gpu_check.build_section(ctx)
    # --small's sizes are 256 and 128; the 128 one (sample_size 16) has no diffusers bin table: 256 for both
    label = list(ctx.spec.sizes)[0 if preset == "xl-1024" or small else 1]
    checkpoint = gpu_check.with_text_encoder(ctx, ctx.checkpoint(label), work / f"{preset}-checkpoint")
    for other in ctx.spec.sizes:  # only the preset's own checkpoint is kept
        shutil.rmtree(ctx.checkpoint(other), ignore_errors=True)
    return checkpoint, "configs/one-gpu.yaml" if ctx.cuda else "configs/tiny.yaml"


def write_config(base: str, checkpoint: Path, path: Path, small_xl: bool, preset: str = "") -> Path:
    import yaml

    data = yaml.safe_load((ROOT / base).read_text())
    data["model"]["path"] = str(checkpoint)
    if preset == "small-cpu":
        # A CPU box where the DiT dominates: on the Ray path one actor holds DiT + VAE and is given every
        # core (Ray then runs torch with that many threads), as the loop's process has them all.
        cores = os.cpu_count() or 1
        data["stages"]["denoise"].update(num_cpus=cores)
        data["stages"]["decode"] = {
            k: v for k, v in data["stages"]["decode"].items() if k not in ("num_cpus", "concurrency")
        }
        data["stages"]["decode"]["colocate"] = True
        data.setdefault("ray", {})["num_cpus"] = cores + 2  # room for the small clean / write tasks beside it
    if small_xl:  # gpu_check --small on a CPU: 2 steps, as its own smoke test
        data["generation"]["num_inference_steps"] = 2
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- the table


def _report(output: Path) -> dict:
    try:
        return json.loads((output / "run_report.json").read_text())
    except (OSError, ValueError):
        return {}


def table(preset: str, results: dict, gpu: bool) -> list[str]:
    a = results.get("a", {})
    zero = results.get("0", {})
    lines = [
        "| run | wall s | images | images/s (wall) | generate-phase images/s | ratio wall to (a) "
        "| ratio wall to (0) | target | pass | busy s per stage | peak RSS MB |"
        + (" GPU peak MB | GPU util % |" if gpu else ""),
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|" + ("---:|---:|" if gpu else ""),
    ]
    names = {
        "0": "(0) bare ray.init + shutdown",
        "a": "(a) plain diffusers loop",
        "b": "(b) pixart-batch generate",
        "c": "(c) the same again (nothing to do)",
        "d": "(d) 3 prompts added",
        "b_ray": "(b) forced through Ray (`--executor ray`), fresh output",
    }
    for key, name in names.items():
        r = results.get(key)
        if r is None:
            continue
        images = r.get("images", 0)
        wall = r["wall_s"]
        phase = r.get("generate_images_per_s")
        ratio_a = wall / a["wall_s"] if a.get("wall_s") and key != "a" else None
        ratio_0 = wall / zero["wall_s"] if zero.get("wall_s") and key != "0" else None
        target, ok = r.get("target", ("", None))
        busy = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("busy") or {}).items())
        cells = [
            name
            + (f" [{r['executor']} executor]" if r.get("executor") else "")
            + ("" if r["exit"] == 0 else f" (exit {r['exit']})"),
            f"{wall:.1f}",
            str(images),
            f"{images / wall:.3f}" if images else "",
            f"{phase:.3f}" if phase else "",
            f"{ratio_a:.2f}" if ratio_a else "",
            f"{ratio_0:.2f}" if ratio_0 else "",
            target,
            "" if ok is None else ("yes" if ok else "**no**"),
            busy,
            f"{r['peak_rss_MB']:.0f}",
        ]
        if gpu:
            cells += [
                f"{r['gpu_peak_MB']:.0f}" if "gpu_peak_MB" in r else "",
                f"{r.get('gpu_util_mean', '')}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def judge(preset: str, results: dict) -> None:
    """Attach ``(target text, pass)`` to the runs the issue sets targets for."""
    a, b, zero = results.get("a"), results.get("b"), results.get("0")
    if preset == "small-cpu" and a and b:
        b["target"] = ("wall ≤ 1.15 × (a)", b["wall_s"] <= 1.15 * a["wall_s"])
        if a.get("generate_images_per_s") and b.get("generate_images_per_s"):
            ok = b["generate_images_per_s"] >= 0.95 * a["generate_images_per_s"]
            b["target"] = (b["target"][0] + "; generate images/s ≥ 0.95 × (a)'s", b["target"][1] and ok)
    if preset == "tiny-cpu" and zero:
        for key, factor in (("b", 3.0), ("c", 1.5), ("d", 2.0)):
            if key in results:
                results[key]["target"] = (
                    f"wall ≤ {factor:g} × (0)",
                    results[key]["wall_s"] <= factor * zero["wall_s"],
                )


def machine() -> str:
    name = platform.node() or subprocess.run(["uname", "-n"], capture_output=True, text=True).stdout.strip()
    text = f"{name}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return (found.stdout.strip() or "unknown") + (
        " (with uncommitted changes)" if dirty.stdout.strip() else ""
    )


# --------------------------------------------------------------------------- main


def run_benchmark(args: argparse.Namespace) -> int:
    import torch

    preset = args.preset
    gpu = torch.cuda.is_available() and preset.startswith("xl")
    if preset.startswith("xl") and not gpu and not args.small:
        print(
            "throughput.py: the xl presets need a CUDA GPU (add --small for gpu_check's CPU sizes)",
            file=sys.stderr,
        )
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix=f"throughput-{preset}-", dir="/tmp")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve() if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}, results {out}", flush=True)
    checkpoint, config, prompts, more = prepare_inputs(args, work, gpu)

    from pixart_batch.config import load_config

    run_config = load_config(config)
    env = dict(
        os.environ,
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
    )
    has_ray = importlib.util.find_spec("ray") is not None
    results: dict[str, dict] = {}
    notes: list[str] = []
    if has_ray:
        num_cpus = run_config.ray.num_cpus or os.cpu_count()
        code = (
            f"import ray; ray.init(address='local', num_cpus={num_cpus}, include_dashboard=False); "
            "ray.shutdown()"
        )
        results["0"] = measure("0", [sys.executable, "-c", code], out / "ray_init.log", gpu, env)
    results["a"] = measure_loop(config, prompts, work, out, gpu, env)
    if has_ray:
        results.update(measure_generate(args, config, (prompts, more), work, out, gpu, env))
    else:
        notes.append(
            RAY_MISSING
            + "; the stages' own throughput against diffusers is gpu_check.py's `throughput` section"
        )
        print(notes[-1], flush=True)

    judge(preset, results)
    text = results_text(args, results, notes, run_config, prompts, checkpoint, gpu)
    print("\n" + text, flush=True)
    (out / "throughput.md").write_text(text)
    (out / "throughput.json").write_text(
        json.dumps({"preset": preset, "results": results, "notes": notes}, indent=2) + "\n"
    )
    if args.append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
        print("appended to benchmarks/RESULTS.md", flush=True)
    failed = [key for key, r in results.items() if r["exit"] != 0]
    return 1 if failed else 0


def prepare_inputs(args: argparse.Namespace, work: Path, gpu: bool) -> tuple[Path, Path, Path, Path]:
    """``(checkpoint, config, prompts, more)`` in ``work``: the preset's checkpoint and config, its
    prompt file and a copy with EXTRA_PROMPTS appended (run (d))."""
    preset = args.preset
    checkpoint, base = build_checkpoint(preset, work, args.small)
    config = write_config(base, checkpoint, work / "config.yaml", preset.startswith("xl") and not gpu, preset)
    prompts = work / "prompts.txt"
    if preset == "tiny-cpu" and not args.prompts:
        shutil.copy(ROOT / "examples" / "prompts.txt", prompts)  # the README demo
    else:
        write_prompts(prompts, args.prompts or DEFAULT_PROMPTS[preset])
    more = work / "prompts-plus-3.txt"
    more.write_text(prompts.read_text(encoding="utf-8") + "\n".join(EXTRA_PROMPTS) + "\n", encoding="utf-8")
    return checkpoint, config, prompts, more


def measure_loop(config: Path, prompts: Path, work: Path, out: Path, gpu: bool, env: dict) -> dict:
    """Run (a), the plain diffusers loop, as its own process; its images and generate-phase rate from
    the report it writes."""
    loop_report = work / "loop_report.json"
    loop = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--loop",
        "--config",
        str(config),
        "--prompts",
        str(prompts),
    ]
    result = measure(
        "a",
        [*loop, "--out", str(work / "loop_images"), "--report", str(loop_report)],
        out / "loop.log",
        gpu,
        env,
    )
    if loop_report.is_file():
        report = json.loads(loop_report.read_text())
        result.update(images=report["images"], generate_images_per_s=report["images_per_second"])
        print(
            f"    loop: load {report['load_seconds']} s, generate {report['generate_seconds']} s, {report}",
            flush=True,
        )
    return result


def measure_generate(
    args: argparse.Namespace,
    config: Path,
    prompt_files: tuple[Path, Path],
    work: Path,
    out: Path,
    gpu: bool,
    env: dict,
) -> dict[str, dict]:
    """Runs (b), (c), (d) and, unless ``--skip-ray-row``, (b) through the Ray executor: ``pixart-batch
    generate`` as its own process each, with what its run report says."""
    prompts, more = prompt_files
    output = work / "output"
    generate = [
        sys.executable,
        "-m",
        "pixart_batch",
        "generate",
        "--config",
        str(config),
        "--output",
        str(output),
        "--prompts",
    ]
    runs = [("b", prompts, output, []), ("c", prompts, output, []), ("d", more, output, [])]
    if not args.skip_ray_row:  # (b) again through the Ray executor: what a cluster run pays here
        runs.append(("b_ray", prompts, work / "output-ray", ["--executor", "ray"]))
    results: dict[str, dict] = {}
    for key, prompt_file, target, extra in runs:
        command = [*generate[:-3], "--output", str(target), "--prompts", str(prompt_file), *extra]
        results[key] = measure(key, command, out / f"generate_{key}.log", gpu, env)
        report = _report(target)
        results[key].update(
            executor=report.get("executor", ""),
            images=report.get("images_generated", 0),
            generate_images_per_s=report.get("images_per_second") or None,
            busy=report.get("stage_busy_seconds") or {},
        )
    return results


def results_text(
    args: argparse.Namespace,
    results: dict,
    notes: list[str],
    run_config: RunConfig,
    prompts: Path,
    checkpoint: Path,
    gpu: bool,
) -> str:
    """The Markdown section: date, machine, commit, command and settings, the table, the notes."""
    import torch

    preset = args.preset
    steps = run_config.generation.num_inference_steps
    denoise = run_config.stages.denoise
    command = "python benchmarks/throughput.py " + shlex.join(args.argv)
    count = sum(1 for line in prompts.read_text().splitlines() if line.strip())
    header = [
        f"### Throughput `{preset}` — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        "",
        f"Machine: {machine()}; commit {commit()}; torch {torch.__version__}. Command: `{command}`.",
        f"{count} prompts (mixed aspect ratios), "
        f"{steps} steps, DiT batch {denoise.batch_size}, {denoise.dtype}, "
        f"checkpoint `{checkpoint.name}`.",
        "",
    ]
    lines = header + table(preset, results, gpu) + [""] + [f"Note: {note}" for note in notes]
    if "a" in results and results["a"].get("generate_images_per_s"):
        lines.append(
            "(a)'s generate phase (after imports and model load): "
            f"{results['a']['generate_images_per_s']:.3f} images/s."
        )
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=PRESETS)
    parser.add_argument("--prompts", help="number of generated prompts (loop mode: the prompt file)")
    parser.add_argument(
        "--out", help="results folder: throughput.md / .json and the logs (default: the work folder)"
    )
    parser.add_argument(
        "--workdir", help="scratch folder: checkpoint, prompts, outputs (default: a new /tmp folder)"
    )
    parser.add_argument(
        "--append", action="store_true", help="also append the table to the tracked benchmarks/RESULTS.md"
    )
    parser.add_argument(
        "--no-append", action="store_true", help=argparse.SUPPRESS
    )  # the default now; still accepted
    parser.add_argument(
        "--small", action="store_true", help="xl presets: gpu_check's --small sizes (CPU smoke test)"
    )
    parser.add_argument(
        "--skip-ray-row", action="store_true", help="do not add (b) forced through the Ray executor"
    )
    parser.add_argument(
        "--loop", action="store_true", help=argparse.SUPPRESS
    )  # (a), run by the benchmark itself
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop:
        return loop_main(args)
    if not args.preset:
        parser.error("--preset is required")
    if args.prompts is not None and (not args.prompts.isdigit() or int(args.prompts) < 1):
        parser.error("--prompts: a number of prompts >= 1")
    args.prompts = int(args.prompts) if args.prompts else None
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
