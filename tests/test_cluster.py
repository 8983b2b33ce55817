"""``ray job submit`` against a real Ray head on 127.0.0.1, and a job spread over two nodes.

The cluster (tests/raycluster.py) is started with ``ray start`` (token authentication on,
as Ray starts it by default) on explicit free ports only, so another Ray on the machine
(default ports included) does not disturb it; each node is waited for until its job
agent answers, and a submit retries only the job head's "No available agent" answer.
It is torn down by killing exactly its own processes — never ``ray stop``, which would
also stop the test session's own Ray and any other Ray on the machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from raycluster import Cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster(tiny_model):
    head = Cluster(ROOT)
    try:
        head.start()
        yield head
    finally:
        head.stop()


def _count_rows(output: Path) -> int:
    from datasets import load_dataset

    return len(load_dataset("parquet", data_dir=str(output / "data"), split="train"))


def test_ray_job_submit_no_wait_status_and_logs(cluster, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog --ar 1:2\na fox --hw 96:160\n")
    output = tmp_path / "out"
    submission = cluster.submit(
        "--config", "configs/tiny.yaml", "--prompts", str(prompts), "--output", str(output), wait=False
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = cluster.ray("job", "status", "--address", cluster.address, submission).stdout.upper()
        if any(word in status for word in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(2)
    logs = cluster.ray("job", "logs", "--address", cluster.address, submission).stdout
    assert "SUCCEEDED" in status, status + logs[-3000:]
    # The driver's own lines reach the job logs (phases, progress, summary, with the Ray executor a
    # job always uses); Ray's INFO lines, Ray Data's plans and progress dumps do not.
    assert re.search(r"\[pixart-batch\] done in [0-9.]+ s: 3 images generated.*\(ray executor\)", logs), logs[
        -3000:
    ]
    assert "[pixart-batch] generate: 3/3 images (100%)" in logs
    ray_lines = [
        line
        for line in logs.splitlines()
        if re.search(r" INFO .*\.py:\d+ --|Execution plan|core_worker\.cc", line)
    ]
    assert not ray_lines, ray_lines[:5]
    assert _count_rows(output) == 3
    assert (
        cluster.ray(
            "job",
            "status",
            "--address",
            cluster.address,
            submission,
            env={**cluster.env, "RAY_AUTH_MODE": "disabled"},
            check=False,
        ).returncode
        != 0
    )


def test_actors_land_on_both_nodes(cluster, tmp_path):
    cluster.add_node()
    recipe = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    for stage in ("denoise", "decode"):
        recipe["stages"][stage].update({"concurrency": 2, "batch_size": 2})
    config = tmp_path / "two-nodes.yaml"
    config.write_text(yaml.safe_dump(recipe))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"prompt number {i}" for i in range(8)) + "\n")
    output = tmp_path / "out"
    submission = cluster.submit("--config", str(config), "--prompts", str(prompts), "--output", str(output))
    assert _count_rows(output) == 8

    # A separate client process: Ray reads RAY_AUTH_MODE once, and this test process runs without auth.
    probe = (
        "import json, sys\n"
        "from ray.job_submission import JobSubmissionClient\n"
        "from ray.util.state import list_actors, list_nodes\n"
        f"job_id = JobSubmissionClient({cluster.address!r}).get_job_info({submission!r}).job_id\n"
        f"gcs = '127.0.0.1:{cluster.gcs_port}'\n"
        "nodes = [n.node_id for n in list_nodes(address=gcs)]\n"
        "mine = list_actors(address=gcs, filters=[('job_id', '=', job_id)], detail=True, limit=1000)\n"
        "actors = [[a.class_name, a.node_id] for a in mine]\n"
        "print(json.dumps({'nodes': nodes, 'actors': actors}))\n"
    )
    found = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=cluster.env, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    nodes = set(found["nodes"])
    workers = [(name, node) for name, node in found["actors"] if "MapWorker" in name]
    assert len(nodes) == 2
    assert {node for _, node in workers} == nodes, workers


def test_every_port_is_explicit_free_and_distinct(cluster):
    """The nodes listen on the ports they were given and on none of Ray's fixed defaults."""
    from raycluster import RAY_DEFAULT_PORTS

    singles = [port for port in cluster.all_ports() if isinstance(port, int)]
    ranges = [port for port in cluster.all_ports() if isinstance(port, tuple)]
    assert len(set(singles)) == len(singles), singles
    for low, high in ranges:
        assert not any(low <= port <= high for port in singles), (low, high)
    assert all(a[1] < b[0] for a, b in zip(sorted(ranges)[:-1], sorted(ranges)[1:], strict=True)), ranges
    listening = set()
    for proc in cluster.own_processes():
        try:
            listening |= {conn.laddr.port for conn in proc.net_connections("inet") if conn.status == "LISTEN"}
        except Exception:  # exited meanwhile
            continue
    assert set(singles) <= listening, sorted(set(singles) - listening)
    assert not listening & RAY_DEFAULT_PORTS, sorted(listening & RAY_DEFAULT_PORTS)


def test_submit_retries_only_the_not_ready_answer(monkeypatch):
    """No Ray needed: the CLI's answers are scripted."""
    import raycluster

    not_ready = subprocess.CompletedProcess(
        [],
        1,
        "",
        f"RuntimeError: Request failed with status code 500: {raycluster.NOT_READY}, "
        "please try again later..",
    )
    other = subprocess.CompletedProcess(
        [], 1, "", "RuntimeError: Request failed with status code 400: bad entrypoint"
    )
    done = subprocess.CompletedProcess([], 0, "Job 'x' submitted successfully", "")
    monkeypatch.setattr(raycluster.time, "sleep", lambda seconds: None)
    cluster = Cluster(ROOT)
    try:
        answers = iter([not_ready, not_ready, done])
        monkeypatch.setattr(cluster, "ray", lambda *args, **kwargs: next(answers))
        assert cluster.submit("--help")
        assert cluster.submit_retries == 2

        answers = iter([not_ready, other, done])
        with pytest.raises(AssertionError, match="bad entrypoint"):
            cluster.submit("--help")

        monkeypatch.setattr(cluster, "ray", lambda *args, **kwargs: not_ready)
        with pytest.raises(AssertionError, match=raycluster.NOT_READY):
            cluster.submit("--help", deadline_s=0)
    finally:
        cluster.stop()
