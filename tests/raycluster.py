"""A throwaway Ray cluster on 127.0.0.1 that can share the machine with other Rays.

* Every port a node uses is explicit and was free when picked (bound to port 0 on
  127.0.0.1, then checked on the IPv4/IPv6 wildcards), distinct within the cluster and
  never one of Ray's fixed defaults (6379, 8265, 10001, 52365, workers 10002-19999), so a
  default ``ray start --head`` elsewhere on the machine cannot collide with it.
* ``start``/``add_node`` return only once the node is ready: its agent wrote the port
  it was given, the job API answers (with the token), the agent's health check answers
  and the node is ALIVE in the GCS.
* ``submit`` retries exactly one answer, the job head's "No available agent to submit
  job" (ray/dashboard/modules/job/job_head.py), with backoff up to a deadline; any
  other failure raises at once with the CLI's output.
* ``stop`` kills only this cluster's processes, by pid: those whose command line names
  its private temp dir or its GCS port. Never ``ray stop``, which stops every Ray on the
  machine. ``kill_node`` SIGKILLs one worker node the same way (its own temp dir names its
  processes; its workers are their children): a spot instance lost.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

NOT_READY = "No available agent to submit job"  # job_head.py: the head found no job agent within 10 s

RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365}) | frozenset(range(10002, 20000))
WORKER_PORTS_PER_NODE = 100

_random = random.Random()  # seeded from os.urandom: two sessions pick different worker ranges


def ray_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 180, check: bool = True
) -> subprocess.CompletedProcess:
    ray = str(Path(sys.executable).parent / "ray")
    result = subprocess.run([ray, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(
            f"ray {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


# -- ports -------------------------------------------------------------------------------


def _bindable(port: int) -> bool:
    """Nothing listens on ``port`` on any local address (Ray binds 127.0.0.1, the node IP, 0.0.0.0 and ::)."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 here
            continue
        with sock:
            try:
                sock.bind((host, port))
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


class Ports:
    """Free TCP ports for one cluster, distinct from one another."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def one(self) -> int:
        for _ in range(500):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in self.taken and port not in RAY_DEFAULT_PORTS and _bindable(port):
                self.taken.add(port)
                return port
        raise RuntimeError("no free port found")

    def block(self, size: int) -> tuple[int, int]:
        """A run of ``size`` free ports for workers, outside the kernel's ephemeral range
        (where ``one`` and outgoing connections take ports) and outside Ray's default worker range."""
        low, high = _ephemeral_range()
        starts = [(20000, low - size)] if low - size >= 20000 else []
        starts += [(high + 1, 65535 - size + 1)] if 65535 - size + 1 > high + 1 else []
        for _ in range(500):
            first, last = _random.choice(starts)
            base = _random.randint(first, last)
            run = range(base, base + size)
            if not any(p in self.taken or p in RAY_DEFAULT_PORTS for p in run) and all(
                _bindable(p) for p in run
            ):
                self.taken.update(run)
                return base, base + size - 1
        raise RuntimeError(f"no free run of {size} ports found")


@dataclass(frozen=True)
class NodePorts:
    node_manager: int
    object_manager: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    metrics_export: int
    runtime_env_agent: int
    min_worker: int
    max_worker: int

    @classmethod
    def pick(cls, ports: Ports) -> NodePorts:
        singles = [ports.one() for _ in range(6)]
        node_manager, object_manager, agent_listen, agent_grpc, metrics_export, runtime_env_agent = singles
        min_worker, max_worker = ports.block(WORKER_PORTS_PER_NODE)
        return cls(
            node_manager=node_manager,
            object_manager=object_manager,
            dashboard_agent_listen=agent_listen,
            dashboard_agent_grpc=agent_grpc,
            metrics_export=metrics_export,
            runtime_env_agent=runtime_env_agent,
            min_worker=min_worker,
            max_worker=max_worker,
        )

    def flags(self) -> list[str]:
        return [
            f"--node-manager-port={self.node_manager}",
            f"--object-manager-port={self.object_manager}",
            f"--dashboard-agent-listen-port={self.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={self.dashboard_agent_grpc}",
            f"--metrics-export-port={self.metrics_export}",
            f"--runtime-env-agent-port={self.runtime_env_agent}",
            f"--min-worker-port={self.min_worker}",
            f"--max-worker-port={self.max_worker}",
        ]


def _temp_dir() -> str:
    return tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes


# -- readiness ---------------------------------------------------------------------------

# Runs in a child process: Ray reads RAY_AUTH_MODE once per process, and the test process runs without auth.
_PROBE = r"""
import json, sys, time, urllib.request
spec = json.loads(sys.argv[1])
deadline = time.monotonic() + spec["timeout"]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_nodes
last = "not tried"
while True:
    try:
        JobSubmissionClient(spec["address"]).list_jobs()
        for port in spec["agent_ports"]:
            with opener.open(f"http://127.0.0.1:{port}/api/healthz", timeout=5) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"agent :{port} healthz answered {answer.status}")
        alive = list_nodes(
            address=spec["gcs"], filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
        )
        if len(alive) < spec["nodes"]:
            raise RuntimeError(f"{len(alive)} of {spec['nodes']} nodes alive")
        print("ready")
        sys.exit(0)
    except Exception as error:
        last = f"{type(error).__name__}: {error}"
    if time.monotonic() > deadline:
        print(f"not ready after {spec['timeout']} s: {last}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
"""


class Cluster:
    """``ray start --head`` on 127.0.0.1 with token authentication; ``add_node`` adds a second node."""

    def __init__(self, root: Path, num_cpus: int = 3, ready_timeout: float = 180) -> None:
        self.root = root
        self.num_cpus = num_cpus
        self.ready_timeout = ready_timeout
        self.started_at = time.time()
        self.temp_dir = _temp_dir()
        # One per node: a node that shared the head's session dir would share its runtime_resources, and its
        # runtime env agent re-extracts (rmtree + unzip) a job's working_dir under the head's running driver.
        self.temp_dirs = [self.temp_dir]
        self.ports = Ports()
        self.gcs_port = self.ports.one()
        self.dashboard_port = self.ports.one()
        self.client_server_port = self.ports.one()
        self.nodes: list[NodePorts] = []
        self.killed: set[int] = set()
        self.wanted_alive = 0
        self.submit_retries = 0
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("RAY_", "PIXART_BATCH_FAULTS", "PIXART_BATCH_SLOW"))
            },
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "RAY_AUTH_MODE": "token",  # clients opt in to the token the head writes to ~/.ray/auth_token
            "HF_HUB_OFFLINE": "1",
        }
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"

    def ray(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess:
        return ray_cli(
            *args, env=self.env if env is None else env, cwd=self.root, timeout=timeout, check=check
        )

    def all_ports(self) -> list[int | tuple[int, int]]:
        singles = [self.gcs_port, self.dashboard_port, self.client_server_port]
        for node in self.nodes:
            singles += [
                node.node_manager,
                node.object_manager,
                node.dashboard_agent_listen,
                node.dashboard_agent_grpc,
                node.metrics_export,
                node.runtime_env_agent,
            ]
        return singles + [(node.min_worker, node.max_worker) for node in self.nodes]

    def start(self) -> None:
        node = NodePorts.pick(self.ports)
        self.nodes.append(node)
        self.ray(
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_server_port}",
            *node.flags(),
            f"--num-cpus={self.num_cpus}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        )
        self._wait_ready()

    def add_node(self, num_cpus: int | None = None) -> int:
        """Start a worker node (``num_cpus``: default the head's); returns its index in :attr:`nodes`."""
        node = NodePorts.pick(self.ports)
        self.nodes.append(node)
        self.temp_dirs.append(_temp_dir())
        self.ray(
            "start",
            f"--address={self.gcs_address}",
            f"--temp-dir={self.temp_dirs[-1]}",
            "--node-ip-address=127.0.0.1",
            *node.flags(),
            f"--num-cpus={self.num_cpus if num_cpus is None else num_cpus}",
            f"--resources={json.dumps({self.node_resource(len(self.nodes) - 1): 1})}",  # tells nodes apart
            "--disable-usage-stats",
        )
        self._wait_ready()
        return len(self.nodes) - 1

    @staticmethod
    def node_resource(index: int) -> str:
        """The custom resource worker node ``index`` has one of (Ray's node list shows its resources)."""
        return f"pixart_node_{index}"

    def kill_node(self, index: int) -> list[int]:
        """SIGKILL every process of worker node ``index`` at once (its raylet, agents and workers: those
        whose command line names its temp dir, with their children); returns their pids. The GCS sees
        the node die later, when its health checks fail."""
        assert 0 < index < len(self.nodes) and index not in self.killed, index
        procs = self._processes([self.temp_dirs[index].rstrip("/") + "/"], port=False)
        assert procs, f"node {index}: no process found"
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        self.killed.add(index)
        self.wanted_alive -= 1
        return [proc.pid for proc in procs]

    def status(self, submission: str) -> str:
        """``ray job status``'s answer, upper case (PENDING / RUNNING / SUCCEEDED / FAILED / STOPPED)."""
        return self.ray("job", "status", "--address", self.address, submission).stdout.upper()

    def wait_job(self, submission: str, timeout: float = 600) -> str:
        """Wait until the job ends; returns its last status answer."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(submission)
            ended = any(word in status for word in ("SUCCEEDED", "FAILED", "STOPPED"))
            if ended or time.monotonic() > deadline:
                return status
            time.sleep(2)

    def logs(self, submission: str) -> str:
        return self.ray("job", "logs", "--address", self.address, submission).stdout

    def probe(self, code: str) -> Any:
        """Run ``code`` in a client process of this cluster (Ray reads RAY_AUTH_MODE once per process, and the
        test process runs without auth); returns the JSON its last printed line holds. ``GCS`` and
        ``ADDRESS`` are defined for it."""
        prelude = f"GCS = {self.gcs_address!r}\nADDRESS = {self.address!r}\n"
        done = subprocess.run(
            [sys.executable, "-c", prelude + code],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=180,
        )
        if done.returncode != 0:
            output = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            raise AssertionError(f"probe failed ({done.returncode}):\n{output}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _wait_ready(self) -> None:
        self.wanted_alive += 1
        deadline = time.monotonic() + self.ready_timeout
        # Each node's dashboard agent persists the HTTP port it bound (-1 when it could not bind): ours,
        # not another Ray's.
        alive = [i for i in range(len(self.nodes)) if i not in self.killed]
        wanted = {self.nodes[i].dashboard_agent_listen for i in alive}
        while True:
            bound = {
                int(p.read_text() or -1)
                for d in (self.temp_dirs[i] for i in alive)
                for p in Path(d).glob("session_*/dashboard_agent_listen_port_*")
            }
            if wanted <= bound:
                break
            if -1 in bound or time.monotonic() > deadline:
                raise AssertionError(
                    f"dashboard agents bound {sorted(bound)}, expected {sorted(wanted)}\n{self.log_tail()}"
                )
            time.sleep(0.5)
        timeout = max(deadline - time.monotonic(), 1)
        spec = {
            "address": self.address,
            "gcs": self.gcs_address,
            "nodes": self.wanted_alive,
            "agent_ports": sorted(wanted),
            "timeout": timeout,
        }
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(spec)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=timeout + 120,
        )
        if probe.returncode != 0:
            raise AssertionError(
                f"cluster not ready:\n{probe.stdout[-2000:]}\n{probe.stderr[-3000:]}\n{self.log_tail()}"
            )

    def submit(
        self,
        *args: str,
        wait: bool = True,
        deadline_s: float = 180,
        env_vars: dict[str, str] | None = None,
    ) -> str:
        """``ray job submit`` (``env_vars``: the job's environment variables, through its runtime env);
        only the job head's not-ready answer is retried (same submission id: no job was created)."""
        submission = f"pixart-{time.monotonic_ns()}"
        command = [
            "job",
            "submit",
            "--address",
            self.address,
            "--submission-id",
            submission,
            "--working-dir",
            str(self.root),
            *(["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []),
            *([] if wait else ["--no-wait"]),
            "--",
            "python",
            "jobs/generate.py",
            *args,
        ]
        deadline, delay = time.monotonic() + deadline_s, 1.0
        while True:
            result = self.ray(*command, timeout=600, check=False)
            if result.returncode == 0:
                return submission
            output = result.stdout + result.stderr
            not_ready = NOT_READY in output and "submitted successfully" not in output
            if not not_ready or time.monotonic() + delay > deadline:
                raise AssertionError(
                    f"ray job submit failed ({result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            self.submit_retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 16)

    def log_tail(self, lines: int = 30) -> str:
        tails = []
        for name in ("dashboard.log", "dashboard_agent.log", "raylet.err", "gcs_server.err"):
            for path in sorted(p for d in self.temp_dirs for p in Path(d).glob(f"session_2*/logs/{name}")):
                tails.append(
                    f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                )
        return "\n".join(tails)

    def own_processes(self) -> list[psutil.Process]:
        """This cluster's processes: named by its temp dir or its GCS port (the Ray client server names
        only the latter), started after it, with their descendants; never this process or its ancestors."""
        return self._processes([d.rstrip("/") + "/" for d in self.temp_dirs], port=True)

    def _processes(self, temp_marks: list[str], port: bool) -> list[psutil.Process]:
        """Processes started after this cluster whose command line names one of ``temp_marks`` (or, with
        ``port``, the GCS port), with their descendants; never this process or its ancestors."""
        port_mark = re.compile(rf":{self.gcs_port}(?!\d)")
        spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        roots = []
        for proc in psutil.process_iter(["cmdline", "create_time"]):
            line = " ".join(proc.info["cmdline"] or [])
            if proc.pid in spared or (proc.info["create_time"] or 0) < self.started_at - 2:
                continue
            if any(mark in line for mark in temp_marks) or (port and port_mark.search(line)):
                roots.append(proc)
        tree = {}
        for root in roots:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            tree.update({p.pid: p for p in family if p.pid not in spared})
        return list(tree.values())

    def stop(self) -> None:
        procs = self.own_processes()
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=30)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
