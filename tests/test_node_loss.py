"""A worker node lost mid-run (all its processes SIGKILLed, as a spot instance goes) costs a submitted job
nothing: it finishes on its own, without a re-submission, every planned image exactly once, ``verify``
clean. The run's only helper actor, its monitor (failure counter and progress), lives on the driver's node,
so no worker node can take it down, and a restart of it is waited out by the stages (issue 22).

The cluster (tests/raycluster.py) is a head with 2 CPUs and two worker nodes with 1 CPU each, on explicit
free ports with token authentication; each test kills one worker node, the next test adds a fresh one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import recipe_file
from raycluster import Cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
THINGS = ("cat", "dog", "fox", "owl", "cup", "hat")
PROMPTS = [f"a {thing}, photo number {n}" for n in range(4) for thing in THINGS]
OVERRIDES = {
    "generation.num_inference_steps": 2,
    # Two DiT and two VAE actors of 0.5 CPU: the pools spread over the nodes (4 CPUs in all, 3 after a loss).
    "stages.denoise.concurrency": 2,
    "stages.decode.concurrency": 2,
    "stages.denoise.batch_size": 2,
    "stages.decode.batch_size": 2,
    "stages.write.batch_size": 2,
    "output.rows_per_shard": 4,
    "output.row_group_size": 2,
    "console.progress_interval_s": 2,
}
SLOW = {"PIXART_BATCH_SLOW": "denoise:1.5"}  # ~1.5 s per DiT batch: the job runs long enough to lose a node

PLACEMENT = """
import json
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_nodes
info = JobSubmissionClient(ADDRESS).get_job_info(SUBMISSION)
nodes = {n.node_id: sorted(n.resources_total) for n in list_nodes(address=GCS, detail=True, limit=100)}
actors = [
    [a.class_name, a.node_id, a.state]
    for a in list_actors(address=GCS, filters=[("job_id", "=", info.job_id)], detail=True, limit=1000)
]
print(json.dumps({"driver": info.driver_node_id, "nodes": nodes, "actors": actors}))
"""


@pytest.fixture(scope="module")
def cluster(tiny_model):
    head = Cluster(ROOT, num_cpus=2)
    try:
        head.start()
        head.add_node(num_cpus=1)
        head.add_node(num_cpus=1)
        yield head
    finally:
        head.stop()


def _shard_keys(output: Path) -> list[str]:
    import pyarrow.parquet as pq

    shards = [p for p in (output / "data").rglob("train-*.parquet") if not p.name.startswith(".")]
    return [key for path in shards for key in pq.read_table(path, columns=["key"]).column("key").to_pylist()]


def _committed(output: Path) -> int:
    try:
        return len(_shard_keys(output))
    except (FileNotFoundError, OSError):
        return 0


def _placement(cluster: Cluster, submission: str) -> dict:
    return cluster.probe(f"SUBMISSION = {submission!r}\n" + PLACEMENT)


def _node_of(placement: dict, index: int) -> str:
    mark = Cluster.node_resource(index)
    (node,) = [node for node, resources in placement["nodes"].items() if mark in resources]
    return node


@pytest.mark.parametrize("turn", [1, 2])
def test_a_job_finishes_on_its_own_when_a_worker_node_dies(cluster, tmp_path, turn):
    victim = turn  # worker node 1, then worker node 2
    while len(cluster.nodes) - len(cluster.killed) < 3:  # the last turn's loss replaced (an autoscaler would)
        cluster.add_node(num_cpus=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = recipe_file(tmp_path / "recipe.yaml", OVERRIDES)
    output = tmp_path / "out"
    args = ("--config", str(config), "--prompts", str(prompts), "--output", str(output), "--executor", "ray")
    submission = cluster.submit(*args, wait=False, env_vars=SLOW)

    deadline = time.monotonic() + 600
    while _committed(output) < OVERRIDES["output.rows_per_shard"]:  # a shard committed: well into generate
        status = cluster.status(submission)
        assert "RUNNING" in status or "PENDING" in status, status + cluster.logs(submission)[-3000:]
        assert time.monotonic() < deadline, cluster.logs(submission)[-3000:]
        time.sleep(1)
    placement = _placement(cluster, submission)
    victim_node = _node_of(placement, victim)
    killed = cluster.kill_node(victim)
    done_before = _committed(output)
    assert done_before < len(PROMPTS), "the job ended before the node was lost: make it slower"

    status = cluster.wait_job(submission, timeout=900)
    logs = cluster.logs(submission)
    assert "SUCCEEDED" in status, status + logs[-4000:]
    # The monitor stayed on the driver's node (the head here), never on the lost one.
    monitors = [(node, state) for name, node, state in placement["actors"] if "PolledCounter" in name]
    assert [node for node, _ in monitors] == [placement["driver"]], placement
    assert placement["driver"] != victim_node
    lost = sorted(name for name, node, _ in placement["actors"] if node == victim_node)

    from pixart_batch.output import open_output

    keys = _shard_keys(output)
    planned = open_output(str(output)).read_plan(["key"]).column("key").to_pylist()
    assert len(planned) == len(PROMPTS) and sorted(keys) == sorted(planned), (len(keys), len(set(keys)), lost)
    verify = subprocess.run(
        [sys.executable, "-m", "pixart_batch", "verify", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print(f"node {victim}: {len(killed)} processes killed, actors {lost}, {done_before} images done before")


def test_a_stage_waits_out_a_restart_of_the_monitor_and_goes_on_without_a_dead_one(ray_session):
    import ray

    from pixart_batch.executors.base import FailureLimits
    from pixart_batch.executors.ray import MonitorCalls, MonitorPoll, start_monitor

    monitor = start_monitor(FailureLimits(max_consecutive=3, max_rate=0.9, rate_after=100))
    record, poll = MonitorCalls(monitor), MonitorPoll(monitor)
    assert record(2, []) is None and record(0, ["boom"]) is None and poll() == (2, 1)
    where = ray.get(monitor.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()))
    assert where == ray.get_runtime_context().get_node_id()  # on the driver's node

    pid = ray.get(monitor.__ray_call__.remote(lambda _: os.getpid()))
    os.kill(pid, signal.SIGKILL)  # its process dies; Ray restarts it (max_restarts=-1)
    psutil.wait_procs([psutil.Process(pid)], timeout=30)
    assert record(0, ["boom"]) is None  # waited for the restarted monitor
    assert poll() == (2, 2)  # the driver's counts taken back, this batch's failure kept
    assert record(0, ["boom"]) is not None  # the third failure in a row, across the restart: the limit holds

    ray.kill(monitor, no_restart=True)
    quick = MonitorCalls(monitor, patience_s=2)
    started = time.monotonic()
    assert quick(1, []) is None and time.monotonic() - started < 10  # gone for good: the batch goes on
    started = time.monotonic()
    assert quick(1, []) is None and time.monotonic() - started < 3  # and the next one waits a second only
    assert poll() == (2, 2)  # the last counts it saw
