"""Section e2e: the real CLI on the large checkpoint."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time

from gpu_check.adapter import E2E_CONFIG_CPU, E2E_CONFIG_GPU, E2E_MODULES, e2e_commands, e2e_report
from gpu_check.builders import with_text_encoder
from gpu_check.common import ROOT
from gpu_check.context import Context


def e2e_section(ctx: Context) -> None:
    """The real CLI on the large checkpoint plus a small T5 text encoder and a locally built tokenizer."""
    result = ctx.results.setdefault("e2e", {})
    missing = [name for name in E2E_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        result["skipped"] = f"not installed here: {', '.join(missing)} (too large to carry as wheels)"
        print(f"  skipped: {result['skipped']}", flush=True)
        return
    spec = ctx.spec
    checkpoint = with_text_encoder(ctx, ctx.checkpoint(ctx.big), ctx.workdir / "e2e-checkpoint")

    output = ctx.workdir / "e2e-output"
    shutil.rmtree(output, ignore_errors=True)
    config = E2E_CONFIG_GPU if ctx.cuda else E2E_CONFIG_CPU
    generate, verify = e2e_commands(
        config, checkpoint, ROOT / "examples" / "prompts.txt", output, steps=spec.steps if ctx.small else None
    )
    result["command"] = " ".join(generate[1:])
    env = dict(os.environ, RAY_DATA_DISABLE_PROGRESS_BARS="1")
    start = time.perf_counter()
    try:
        process = subprocess.run(generate, cwd=ROOT, env=env, capture_output=True, text=True, timeout=spec.e2e_timeout_s)
    except subprocess.TimeoutExpired as exc:
        tail = ((exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""))[-3000:]
        print(tail, flush=True)
        raise RuntimeError(f"generate did not finish within {spec.e2e_timeout_s} s") from None
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["generate_exit"] = process.returncode
    print("\n".join((process.stdout + process.stderr).splitlines()[-40:]), flush=True)
    if process.returncode != 0:
        raise RuntimeError(f"generate exited with {process.returncode}")
    result.update(e2e_report(output))
    checked = subprocess.run(verify, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    result["verify_exit"] = checked.returncode
    print((checked.stdout + checked.stderr)[-2000:], flush=True)
    print(f"  {result}", flush=True)
    if checked.returncode != 0:
        raise RuntimeError(f"verify exited with {checked.returncode}")
