"""Section e2e: the real CLI, through Ray, on the large checkpoint: ``generate --executor ray`` run to the
end (images/s against the plain diffusers loop of the throughput section, the GPU's busy fraction and
peak memory from ``nvidia-smi`` sampling, the time outside the stages), then a second output killed with
SIGKILL once its first shards are committed and resumed, then ``verify`` on both."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from gpu_check.adapter import E2E_CONFIG_CPU, E2E_CONFIG_GPU, E2E_MODULES, e2e_commands, e2e_report
from gpu_check.builders import with_text_encoder
from gpu_check.common import ROOT
from gpu_check.context import Context


class GpuSampler:
    """``nvidia-smi`` every 200 ms while a command runs: busy fraction (utilization > 0) and peak memory."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        query = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            "--id=0",
        ]
        while not self._stop.is_set():
            try:
                text = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.strip()
                busy, memory = (float(part) for part in text.split(",")[:2])
                self.samples.append((busy, memory))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.2)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_sampling": "no nvidia-smi"}
        busy = [b for b, _ in self.samples]
        return {
            "gpu_samples": len(busy),
            "gpu_busy_fraction": round(sum(1 for b in busy if b > 0) / len(busy), 3),
            "gpu_mean_utilization_pct": round(sum(busy) / len(busy), 1),
            "gpu_peak_memory_mib": max(m for _, m in self.samples),
        }


def _run(command: list[str], env: dict, timeout: int) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or "")[-3000:]
        print(tail, flush=True)
        raise RuntimeError(f"{' '.join(command[3:5])} did not finish within {timeout} s") from None
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def _shards(output: Path) -> int:
    files = (output / "data").rglob("*")
    return sum(
        1 for path in files if path.suffix in (".parquet", ".tar") and not path.name.startswith((".", "_"))
    )


def kill_and_resume(generate: list[str], output: Path, env: dict, timeout: int) -> dict:
    """Start ``generate``, SIGKILL its whole process group once a shard is committed, then run it again."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = subprocess.Popen(generate, cwd=ROOT, env=env, start_new_session=True, **quiet)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and _shards(output) == 0:
        time.sleep(0.2)
    killed_with = _shards(output)
    finished_first = process.poll() is not None
    if not finished_first:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    code, text, seconds = _run(generate, env, timeout)
    print("\n".join(text.splitlines()[-8:]), flush=True)
    if code != 0:
        raise RuntimeError(f"the resumed generate exited with {code}")
    report = e2e_report(output)
    return {
        "shards_when_killed": killed_with,
        "finished_before_the_kill": finished_first,
        "resume_wall_s": round(seconds, 1),
        "resume_images_generated": report["images_generated"],
        "resume_images_skipped": report["images_skipped"],
    }


def small_shards(config: str, workdir: Path, rows: int = 4) -> str:
    """``config`` with ``rows`` images per shard, so a run is killed with shards committed and shards
    to go."""
    import yaml

    data = yaml.safe_load((ROOT / config).read_text())
    data.setdefault("output", {}).update(rows_per_shard=rows, row_group_size=rows)
    path = workdir / "e2e-small-shards.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def e2e_section(ctx: Context) -> None:
    """The real CLI on the large checkpoint plus a small T5 text encoder and a locally built tokenizer."""
    result = ctx.results.setdefault("e2e", {})
    missing = [name for name in E2E_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        result["skipped"] = (
            f"not installed here: {', '.join(missing)} (carry .bundle: benchmarks/device_bundle.sh)"
        )
        print(f"  skipped: {result['skipped']}", flush=True)
        return
    spec = ctx.spec
    checkpoint = with_text_encoder(ctx, ctx.checkpoint(ctx.big), ctx.workdir / "e2e-checkpoint")
    config = E2E_CONFIG_GPU if ctx.cuda else E2E_CONFIG_CPU
    prompts = ROOT / "examples" / "prompts.txt"
    env = dict(os.environ, RAY_DATA_DISABLE_PROGRESS_BARS="1")
    steps = spec.steps if ctx.small else None

    output = ctx.workdir / "e2e-output"
    shutil.rmtree(output, ignore_errors=True)
    generate, verify = e2e_commands(config, checkpoint, prompts, output, steps=steps)
    result["command"] = " ".join(generate[1:])
    with GpuSampler() as sampler:
        code, text, seconds = _run(generate, env, spec.e2e_timeout_s)
    result["wall_s"] = round(seconds, 1)
    result["generate_exit"] = code
    print("\n".join(text.splitlines()[-20:]), flush=True)
    if code != 0:
        raise RuntimeError(f"generate exited with {code}")
    result.update(e2e_report(output))
    result.update(sampler.summary())
    stages = result.get("stage_seconds") or {}
    result["outside_stages_s"] = round(
        seconds - sum(stages.values()), 1
    )  # Ray's start, model loading between phases
    loop = ctx.results.get("throughput", {}).get("a_diffusers_loop", {}).get("images_per_s")
    if loop and result.get("images_per_second"):
        result["ratio_over_diffusers_loop"] = round(result["images_per_second"] / loop, 3)
    code, text, _ = _run(verify, env, 300)
    result["verify_exit"] = code
    print(text[-1500:], flush=True)
    if code != 0:
        raise RuntimeError(f"verify exited with {code}")

    resumed = ctx.workdir / "e2e-resumed"
    shutil.rmtree(resumed, ignore_errors=True)
    generate, verify = e2e_commands(
        small_shards(config, ctx.workdir), checkpoint, prompts, resumed, steps=steps
    )
    result["kill_and_resume"] = kill_and_resume(generate, resumed, env, spec.e2e_timeout_s)
    code, text, _ = _run(verify, env, 300)
    result["kill_and_resume"]["verify_exit"] = code
    print(f"  {result}", flush=True)
    if code != 0:
        raise RuntimeError(f"verify after the resume exited with {code}: {text[-500:]}")
