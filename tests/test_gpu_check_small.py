"""A CPU smoke run of benchmarks/gpu_check.py (``--small``): the benchmark package keeps working between
GPU loans. The stages it times are built from ``RunSpec`` as in the pipeline (the throughput section)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("env", "build", "throughput")


def test_gpu_check_small(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--small", "--sections", ",".join(SECTIONS[1:])]
    done = subprocess.run(
        [*command, "--out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sections failed: none" in done.stdout

    results = json.loads((out / "gpu_check.json").read_text())
    assert list(results["sections"]) == list(SECTIONS)
    assert all(info["status"] == "ok" for info in results["sections"].values())
    assert results["meta"]["small"] is True and results["meta"]["device"] == "cpu"
    throughput = results["throughput"]
    for method in ("a_diffusers_loop", "b_pixart_batch_stages"):
        value = throughput[method]["images_per_s"]
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    assert math.isfinite(throughput["ratio_b_over_a_images_per_s"])

    report = (out / "gpu_check.md").read_text()
    assert report.startswith("## GPU check: CPU smoke test")
    for name in SECTIONS:
        assert f"| {name} | ok |" in report
    assert "(b) pixart_batch Denoiser + Decoder stages" in report
    assert f"| {throughput['b_pixart_batch_stages']['s_per_image']} |" in report
