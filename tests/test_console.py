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
DEMO = [
    "generate",
    "--config",
    str(ROOT / "configs" / "tiny.yaml"),
    "--prompts",
    str(ROOT / "examples" / "prompts.txt"),
]


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
    assert text.count("\r\033[K") == 4 and text.count("4/4 images (100%)") == 1  # close() does not repeat it


def _in_pty(args: list[str], timeout: float = 600) -> str:
    """Run the CLI with stdout and stderr on a pseudo-terminal; everything it printed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pixart_batch", *args],
        stdout=follower,
        stderr=follower,
        env=cli_env(),
        start_new_session=True,
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


# the ray case starts Ray: slow
@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_demo_in_a_terminal_speaks_only_in_its_own_lines(tmp_path, tiny_model, executor):
    text = _in_pty([*DEMO, "--output", str(tmp_path / "out"), "--executor", executor])
    assert "\x1b[0m" not in text  # no colour reset left by Ray's colorama at exit
    assert not text.startswith(("\n", "\r\n"))  # no blank first line
    lines = [line for line in re.split(r"[\r\n]+", text.replace("\x1b[K", "")) if line.strip()]
    foreign = [line for line in lines if not line.startswith("[pixart-batch]")]
    assert not foreign, foreign[:5]
    assert len([line for line in lines if re.search(r"generate: 22/22 images \(100%\)", line)]) == 1
    assert lines[-1].startswith("[pixart-batch] done in ") and f"({executor} executor)" in lines[-1]
    assert not [line for line in lines if RAY_LINE.search(line)]


@pytest.mark.slow  # starts Ray
def test_verbose_restores_rays_lines(tmp_path, tiny_model):
    text = _in_pty([*DEMO, "--output", str(tmp_path / "out"), "--executor", "ray", "--verbose"])
    assert RAY_LINE.search(text), text[-2000:]


def test_not_a_terminal_prints_progress_lines(tmp_path, tiny_model):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixart_batch",
            *DEMO,
            "--output",
            str(tmp_path / "out"),
            "--progress-interval",
            "0.001",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    progress = [line for line in done.stderr.splitlines() if "] generate: " in line]
    assert (
        len(progress) >= 2 and "\r" not in done.stderr
    )  # one line per update (batches of 8 → 3), no rewrites
    assert progress[-1].startswith("[pixart-batch] generate: 22/22 images (100%)")


def test_final_counts_are_not_printed_twice_when_not_a_terminal():
    clock, out = Clock(), io.StringIO()
    progress = Progress(8, interval_s=30, stream=out, clock=clock)
    clock.now = 1
    progress.update(8, 0)  # one batch: the first update is also the last
    progress.close()
    assert out.getvalue().count("\n") == 1 and "8/8 images (100%)" in out.getvalue()


def test_final_counts_are_not_rewritten_in_a_terminal():
    clock, out = Clock(), Terminal()
    progress = Progress(8, interval_s=30, stream=out, clock=clock)
    clock.now = 1
    progress.update(8, 0)
    clock.now = 2
    progress.close()  # a log of the terminal (script, CI) would show the 100% line twice
    assert out.getvalue().count("8/8 images (100%)") == 1 and out.getvalue().endswith("\n")


def _report(**figures):
    from pixart_batch.run.report import RunReport

    report = RunReport(prompts=22, executor="local", output="out/demo", store="out/demo/embeddings/x")
    for name, value in figures.items():
        setattr(report, name, value)
    return report.close(1.5)


def test_summary_explains_the_captions_and_a_run_with_nothing_to_generate():
    from pixart_batch.run.report import summary

    line = summary(_report(images_planned=22, images_skipped=22, embeddings_reused=23), "out/demo")
    assert "nothing to generate" in line and "images/s while generating" not in line
    assert "23 reused (the distinct captions of 22 prompts and the negative prompt)" in line
    line = summary(_report(images_planned=22, images_generated=22, embeddings_encoded=23), "out/demo")
    assert "22 images generated" in line and "images/s while generating" in line


def test_encode_summary_has_no_image_counters():
    from pixart_batch.run.report import summary

    line = summary(_report(encode_only=True, embeddings_encoded=23), "out/demo")
    assert line.startswith("encode done in 1.5 s: 23 captions encoded, 0 reused") and "image" not in line
    assert line.endswith("-> out/demo/embeddings/x")


def test_final_counts_shown_once_when_polled_again():
    clock, out = Clock(), Terminal()
    progress = Progress(8, interval_s=30, stream=out, clock=clock)
    for step in range(1, 5):  # the Ray executor's poller, then its last update after the write
        clock.now = step
        progress.update(8, 0)
    progress.close()
    assert out.getvalue().count("8/8 images (100%)") == 1
