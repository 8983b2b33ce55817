"""``ray job submit`` against a real Ray head on 127.0.0.1, and a job spread over two nodes.

The cluster is started with ``ray start`` (token authentication on, as Ray starts it by
default) and torn down by killing exactly its own processes — never ``ray stop``, which
would also stop the test session's own Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str, env: dict[str, str], timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    ray = str(Path(sys.executable).parent / "ray")
    result = subprocess.run([ray, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


class Cluster:
    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.gcs_port, self.dashboard_port = _free_port(), _free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PIXART_BATCH_FAULTS", "PIXART_BATCH_SLOW"))},
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "RAY_AUTH_MODE": "token",  # clients opt in to the token the head writes to ~/.ray/auth_token
            "HF_HUB_OFFLINE": "1",
        }
        _ray(
            "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", "--num-cpus=3", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
            env=self.env,
        )
        self.address = f"http://127.0.0.1:{self.dashboard_port}"

    def add_node(self) -> None:
        _ray(
            "start", f"--address=127.0.0.1:{self.gcs_port}", "--node-ip-address=127.0.0.1", "--num-cpus=3",
            f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}", "--disable-usage-stats",
            env=self.env,
        )

    def submit(self, *args: str, wait: bool = True) -> str:
        submission = f"pixart-{time.monotonic_ns()}"
        _ray(
            "job", "submit", "--address", self.address, "--submission-id", submission, "--working-dir", str(ROOT),
            *([] if wait else ["--no-wait"]), "--", "python", "jobs/generate.py", *args, env=self.env, timeout=600,
        )
        return submission

    def stop(self) -> None:
        marks = (self.temp_dir, f":{self.gcs_port}")
        mine = [p for p in psutil.process_iter(["cmdline"]) if any(m in " ".join(p.info["cmdline"] or []) for m in marks)]
        tree = {p.pid: p for root in mine for p in [root, *_children(root)]}
        for proc in tree.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(tree.values()), timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def cluster(tiny_model):
    head = Cluster()
    try:
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
    submission = cluster.submit("--config", "configs/tiny.yaml", "--prompts", str(prompts), "--output", str(output), wait=False)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = _ray("job", "status", "--address", cluster.address, submission, env=cluster.env).stdout.upper()
        if any(word in status for word in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(2)
    logs = _ray("job", "logs", "--address", cluster.address, submission, env=cluster.env).stdout
    assert "SUCCEEDED" in status, status + logs[-3000:]
    assert "[pixart-batch] done: 3 images generated" in logs  # the driver's summary reaches the job logs
    assert _count_rows(output) == 3
    assert _ray("job", "status", "--address", cluster.address, submission, env={**cluster.env, "RAY_AUTH_MODE": "disabled"}, check=False).returncode != 0


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
        "actors = [[a.class_name, a.node_id] for a in list_actors(address=gcs, filters=[('job_id', '=', job_id)], detail=True, limit=1000)]\n"
        "print(json.dumps({'nodes': nodes, 'actors': actors}))\n"
    )
    found = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cluster.env, check=True).stdout.strip().splitlines()[-1])
    nodes = set(found["nodes"])
    workers = [(name, node) for name, node in found["actors"] if "MapWorker" in name]
    assert len(nodes) == 2
    assert {node for _, node in workers} == nodes, workers

