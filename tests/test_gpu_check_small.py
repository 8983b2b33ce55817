"""A CPU smoke run of benchmarks/gpu_check.py (``--small``): the benchmark package keeps working between
GPU loans. The stages it times are built from ``RunSpec`` as in the pipeline (the throughput section)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("env", "build", "throughput")


def test_gpu_check_small(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_check.py"),
        "--small",
        "--sections",
        ",".join(SECTIONS[1:]),
    ]
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


@pytest.mark.slow
def test_gpu_check_e2e_small_runs_the_cli_through_ray_kills_and_resumes(tmp_path):
    """The end-to-end section on CPU: ``generate --executor ray``, then a second output SIGKILLed after its
    first shards and resumed, ``verify`` passing on both."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_check.py"),
        "--small",
        "--sections",
        "build,throughput,e2e",
    ]
    done = subprocess.run(
        [*command, "--out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    e2e = json.loads((out / "gpu_check.json").read_text())["e2e"]
    assert "--executor ray" in e2e["command"]
    assert (e2e["generate_exit"], e2e["verify_exit"], e2e["images_generated"], e2e["images_failed"]) == (
        0,
        0,
        22,
        0,
    )
    assert math.isfinite(e2e["ratio_over_diffusers_loop"]) and e2e["gpu_sampling"] == "no nvidia-smi"
    resumed = e2e["kill_and_resume"]
    assert (
        resumed["verify_exit"] == 0
        and resumed["resume_images_generated"] + resumed["resume_images_skipped"] == 22
    )
    if not resumed["finished_before_the_kill"]:
        assert resumed["shards_when_killed"] >= 1 and resumed["resume_images_skipped"] >= 4
