"""The console: phase lines, one progress line, a summary; Ray's own lines only with --verbose."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runner import cli_env

from pixart_batch.progress import Progress

ROOT = Path(__file__).parent.parent
DEMO = ["generate", "--config", str(ROOT / "configs" / "tiny.yaml"), "--prompts", str(ROOT / "examples" / "prompts.txt")]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_prints_every_interval_when_not_a_terminal():
    clock, out = Clock(), io.StringIO()
    progress = Progress(100, interval_s=30, stream=out, clock=clock)
    clock.now = 1
    progress.update(10, 0)  # the first update is shown
    clock.now = 20
    progress.update(40, 1)  # not due yet
    clock.now = 32
    progress.update(60, 2)
    clock.now = 40
    progress.update(97, 3)
    progress.close()  # the final counts, always
    lines = out.getvalue().splitlines()
    assert lines == [
        "[pixart-batch] generate: 10/100 images (10%), 10.00 images/s, ETA 0:00:09, 0 failed",
        "[pixart-batch] generate: 62/100 images (62%), 1.88 images/s, ETA 0:00:19, 2 failed",
        "[pixart-batch] generate: 100/100 images (100%), 2.42 images/s, ETA 0:00:00, 3 failed",
    ]


def test_progress_rewrites_one_line_in_a_terminal():
    clock, out = Clock(), Terminal()
    progress = Progress(4, interval_s=30, stream=out, clock=clock)
    for step in range(1, 5):
        clock.now = step
        progress.add(1, 0)
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended once
    assert text.count("\r\033[K") == 5 and "4/4 images (100%)" in text


def _in_pty(args: list[str], timeout: float = 600) -> str:
    """Run the CLI with stdout and stderr on a pseudo-terminal; everything it printed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pixart_batch", *args], stdout=follower, stderr=follower, env=cli_env(), start_new_session=True
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the other side closed
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=timeout)
    os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


RAY_LINE = re.compile(r"\b(INFO|WARNING)\b.*\.py:\d+ --|core_worker\.cc|Execution plan|Tip:|Running Dataset")


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_demo_in_a_terminal_speaks_only_in_its_own_lines(tmp_path, tiny_model, executor):
    text = _in_pty([*DEMO, "--output", str(tmp_path / "out"), "--executor", executor])
    lines = [line for line in re.split(r"[\r\n]+", text.replace("\x1b[K", "")) if line.strip() and line.strip() != "\x1b[0m"]
    foreign = [line for line in lines if not line.startswith("[pixart-batch]")]
    assert not foreign, foreign[:5]
    assert any(re.search(r"generate: 22/22 images \(100%\)", line) for line in lines)
    assert lines[-1].startswith("[pixart-batch] done in ") and f"({executor} executor)" in lines[-1]
    assert not [line for line in lines if RAY_LINE.search(line)]


def test_verbose_restores_rays_lines(tmp_path, tiny_model):
    text = _in_pty([*DEMO, "--output", str(tmp_path / "out"), "--executor", "ray", "--verbose"])
    assert RAY_LINE.search(text), text[-2000:]


def test_not_a_terminal_prints_progress_lines(tmp_path, tiny_model):
    done = subprocess.run(
        [sys.executable, "-m", "pixart_batch", *DEMO, "--output", str(tmp_path / "out"), "--progress-interval", "0.001"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    progress = [line for line in done.stderr.splitlines() if "] generate: " in line]
    assert len(progress) >= 2 and "\r" not in done.stderr  # one line per update (batches of 8 → 3), no rewrites
    assert progress[-1].startswith("[pixart-batch] generate: 22/22 images (100%)")


def test_final_counts_are_not_printed_twice_when_not_a_terminal():
    clock, out = Clock(), io.StringIO()
    progress = Progress(8, interval_s=30, stream=out, clock=clock)
    clock.now = 1
    progress.update(8, 0)  # one batch: the first update is also the last
    progress.close()
    assert out.getvalue().count("\n") == 1 and "8/8 images (100%)" in out.getvalue()
