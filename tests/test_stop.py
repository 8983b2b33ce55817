"""A graceful stop: the first SIGINT / SIGTERM during generate commits every image made so far (the open
shard closed as a short one) and exits 130 / 143 with the resume hint; a second SIGINT abandons the flush.
The CLI runs in a subprocess, is signalled once the progress line counts images, and is then resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import recipe_file
from runner import kill_tree, run_cli, start_cli, wait_for

from pixart_batch.signals import Terminated
from pixart_batch.stopping import CHECK_EVERY_S, GracefulStop, StopFlag, stoppable

THINGS = ["red apple", "green pear", "blue cup", "white vase", "black hat", "lemon", "brown shoe", "old book"]
PROMPTS = [f"a {thing} on a table, photo number {number}" for number in range(4) for thing in THINGS]
ROWS_PER_SHARD = 9  # DiT batches of 2: the counts are even, so a stop leaves the open shard partly filled
OVERRIDES = {
    "generation.num_inference_steps": 2,
    "stages.denoise.batch_size": 2,
    "stages.decode.batch_size": 2,
    "stages.write.batch_size": 2,
    "output.rows_per_shard": ROWS_PER_SHARD,
    "output.row_group_size": 3,
}
PROGRESS = re.compile(r"generate: (\d+)/(\d+) images")


def _setup(tmp_path: Path, **overrides: object) -> tuple[list[str], Path, Path]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = recipe_file(tmp_path / "recipe.yaml", {**OVERRIDES, **overrides})
    output = tmp_path / "out"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    return [*command, "--progress-interval", "0.1"], output, tmp_path / "run.log"


def _counted(text: str) -> int:
    """The images the last progress line in ``text`` counted (0 before the first one)."""
    counts = [int(match.group(1)) for match in PROGRESS.finditer(text)]
    return counts[-1] if counts else 0


def _shard_rows(output: Path) -> list[int]:
    import pyarrow.parquet as pq

    return [pq.read_metadata(path).num_rows for path in sorted((output / "data").rglob("train-*.parquet"))]


def _committed(output: Path) -> set[str]:
    from pixart_batch.output import open_output

    return open_output(str(output)).committed_keys()


def _problems(output: Path) -> list[str]:
    """``verify``'s findings other than the images a stopped run has not made yet."""
    from pixart_batch.audit import verify

    problems = verify(str(output)).problems
    return [problem for problem in problems if "planned images are missing" not in problem]


def _stop_once(command: list[str], log: Path, signum: int, at_least: int, **env: str) -> tuple[int, int]:
    """Run ``command``, send ``signum`` once the progress line counts ``at_least`` images; returns
    (the exit status, the images counted before the signal)."""
    run = start_cli(command, log, **env)
    try:
        wait_for(lambda: _counted(log.read_text()) >= at_least, run, log, timeout=420)
        seen = _counted(log.read_text())
        run.send_signal(signum)
        return run.wait(timeout=300), seen
    finally:
        kill_tree(run)


def _check_stopped(output: Path, log: Path, seen: int, signum: int) -> set[str]:
    text = log.read_text()
    name = signal.Signals(signum).name
    assert f"stopping ({name}): committing the" in text and "Ctrl-C again to abandon" in text, text[-3000:]
    assert "re-run the same command to resume" in text and "Traceback" not in text, text[-3000:]
    committed = _committed(output)
    # Every image counted before the signal is committed, and every image counted at all (the in-flight
    # batches finished and were counted too); none is left in a temporary file.
    assert seen <= len(committed) == _counted(text) < len(PROMPTS), text[-3000:]
    assert sum(_shard_rows(output)) == len(committed)
    # The open shard was closed as a short one.
    assert any(rows < ROWS_PER_SHARD for rows in _shard_rows(output)), _shard_rows(output)
    assert not list(output.rglob(".tmp-*")) and not list(output.glob(".work/*"))
    assert _problems(output) == []
    return committed


def _check_resumed(command: list[str], output: Path, log: Path, committed: set[str]) -> None:
    from pixart_batch.cli import main

    assert run_cli(command, log, timeout=420) == 0, log.read_text()[-3000:]
    report = json.loads((output / "run_report.json").read_text())
    assert report["images_planned"] == len(PROMPTS)
    assert report["images_skipped"] == len(committed)
    assert report["images_generated"] == len(PROMPTS) - len(committed)  # only the rest
    final = _committed(output)
    assert committed <= final and len(final) == sum(_shard_rows(output)) == len(PROMPTS)  # each key once
    assert main(["verify", str(output)]) == 0


@pytest.mark.parametrize(
    "signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_stopped_local_run_commits_every_counted_image_then_resumes(tmp_path, tiny_model, signum, status):
    command, output, log = _setup(tmp_path)
    command += ["--executor", "local"]
    slow = {"PIXART_BATCH_SLOW": "denoise:0.5"}
    code, seen = _stop_once(command, log, signum, at_least=ROWS_PER_SHARD + 1, **slow)
    assert code == status, log.read_text()[-3000:]
    committed = _check_stopped(output, log, seen, signum)
    assert len(committed) > ROWS_PER_SHARD  # a full shard, then the short one
    _check_resumed(command, output, log, committed)


@pytest.mark.slow
@pytest.mark.parametrize("colocate", [False, True], ids=["vae-pool", "colocated"])
def test_a_stopped_ray_run_commits_every_counted_image_then_resumes(tmp_path, tiny_model, colocate):
    command, output, log = _setup(tmp_path, **{"stages.decode.colocate": colocate})
    ray_command = [*command, "--executor", "ray"]
    code, seen = _stop_once(ray_command, log, signal.SIGINT, at_least=1, PIXART_BATCH_SLOW="denoise:0.5")
    assert code == 130, log.read_text()[-3000:]
    committed = _check_stopped(output, log, seen, signal.SIGINT)
    # Resumed in-process: quicker than a second Ray start, and the rows are the same.
    _check_resumed([*command, "--executor", "local"], output, log, committed)


def test_a_second_ctrl_c_abandons_the_flush_and_leaves_no_partial_file(tmp_path, tiny_model):
    # No shard fills before the stop, and the flush's shard waits before its commit: the second Ctrl-C
    # lands there.
    command, output, log = _setup(tmp_path, **{"output.rows_per_shard": 100})
    command += ["--executor", "local"]
    run = start_cli(command, log, PIXART_BATCH_SLOW="denoise:0.5,shard-commit:60")
    try:
        wait_for(lambda: _counted(log.read_text()) >= 2, run, log, timeout=420)
        run.send_signal(signal.SIGINT)
        wait_for(lambda: bool(list((output / "data").rglob(".tmp-*"))), run, log)
        run.send_signal(signal.SIGINT)
        code = run.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the second Ctrl-C did not stop the run:\n{log.read_text()[-3000:]}") from None
    finally:
        kill_tree(run)
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert "SIGINT again: abandoning the flush" in text, text[-3000:]
    assert "re-run the same command to resume" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not list(output.rglob(".tmp-*")) and _shard_rows(output) == []  # the flush's shard dropped whole
    assert _problems(output) == []


# -- the pieces, in this process


def test_the_stop_flag_is_a_file_read_at_most_every_half_second_and_it_stays_set(tmp_path):
    flag, path = StopFlag(str(tmp_path), "run1"), tmp_path / ".work" / "run1" / "stop"
    assert not flag.requested()
    path.parent.mkdir(parents=True)
    path.touch()  # another process asks
    assert not flag.requested()  # this process read it less than CHECK_EVERY_S ago
    time.sleep(CHECK_EVERY_S + 0.05)
    assert flag.requested()
    path.unlink()
    assert flag.requested()  # once seen, seen
    other = StopFlag(str(tmp_path), "run2")
    other.request()
    assert (tmp_path / ".work" / "run2" / "stop").is_file() and other.requested()


def test_a_stoppable_stage_returns_no_rows_for_a_batch_given_after_the_stop(tmp_path):
    class Double:
        def __call__(self, batch):
            return {"x": batch["x"] * 2, "y": batch["x"]}

    flag = StopFlag(str(tmp_path), "run")
    stage = stoppable(Double, flag)()
    assert type(stage).__name__ == "Double"  # Ray names the stage after it
    assert stage({"x": np.arange(3)})["x"].tolist() == [0, 2, 4]
    flag.request()
    out = stage({"x": np.arange(3)})
    assert list(out) == ["x"] and len(out["x"]) == 0


@pytest.mark.parametrize(
    "signum, raised",
    [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)],
    ids=["SIGINT", "SIGTERM"],
)
def test_the_first_signal_asks_for_a_stop_and_the_second_abandons(tmp_path, capsys, signum, raised):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    flag = StopFlag(str(tmp_path), "run")
    with GracefulStop(lambda: 7, flag) as stop:
        os.kill(os.getpid(), signum)
        time.sleep(0.2)  # the handler runs in this (the main) thread, and returns
        assert stop.requested and flag.requested()
        with pytest.raises(raised):
            os.kill(os.getpid(), signum)
            time.sleep(5)
    assert {number: signal.getsignal(number) for number in before} == before
    with pytest.raises(raised):
        stop.raise_if_stopped()
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert f"stopping ({name}): committing the 7 images generated so far (Ctrl-C again to abandon)" in err
    assert f"{name} again: abandoning the flush" in err


def test_a_stop_that_cannot_reach_the_workers_stops_at_once(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(KeyboardInterrupt), GracefulStop(lambda: 0, StopFlag(str(blocker), "run")):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert "cannot ask the workers to stop" in capsys.readouterr().err
