"""Running the CLI in a subprocess with its own local Ray, and killing it whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def cli_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIXART_BATCH_FAULTS", "PIXART_BATCH_SLOW", "RAY_ADDRESS"))
    }
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def start_cli(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "pixart_batch", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=cli_env(**env),
        start_new_session=True,
    )


def run_cli(args: list[str], log: Path, timeout: float = 600, **env: str) -> int:
    process = start_cli(args, log, **env)
    try:
        return process.wait(timeout=timeout)
    finally:
        kill_tree(process)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (Ray's GCS, raylet, workers), all at once."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for proc in tree:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=60)
    psutil.wait_procs([p for p in tree if p.is_running()], timeout=30)


def wait_for(
    condition: Callable[[], bool], process: subprocess.Popen, log: Path, timeout: float = 300
) -> None:
    """Poll until ``condition()``; fail with the log if the run ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(
                f"run ended (exit {process.returncode}) before the kill point:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)
    kill_tree(process)
    raise AssertionError(f"kill point not reached in {timeout}s:\n{log.read_text()[-3000:]}")
