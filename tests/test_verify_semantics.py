"""``verify`` means damage or missing planned work: images from an earlier plan are a note (exit 0); while a
live run holds the output's lock it names the run and its progress and never says FAILED for work not done
yet (exit 3); damage fails (exit 1) whether or not a run is live. ``ownership.current_holder`` tells
whether a live run holds the lock without taking it or touching the lock file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import tiny_config
from runner import cli_env

from pixart_batch import ownership
from pixart_batch.audit import EXIT_IN_PROGRESS, EXIT_OK, EXIT_PROBLEMS, status
from pixart_batch.cli import main
from pixart_batch.ownership import LOCK_FILE, OutputLock, current_holder
from pixart_batch.storage import locate

PROMPTS = ["a red fox in the snow", "a blue house by the sea", "a green tree on a hill", "a cat on a mat"]
SMALL = {"output.rows_per_shard": 2, "output.row_group_size": 2, "ray.executor": "local"}

HOLD = """
import sys, time
from pixart_batch.ownership import OutputLock
from pixart_batch.storage import locate
lock = OutputLock(locate(sys.argv[1]), "held-by-test").acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold(path: Path) -> subprocess.Popen:
    """Another process that takes the output's lock (as a run does) and keeps it until killed."""
    command = [sys.executable, "-c", HOLD, str(path)]
    holder = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()
    assert line == "held\n", holder.stderr.read() if holder.stderr else line
    return holder


@pytest.fixture
def held(tmp_path) -> Iterator[tuple[Path, subprocess.Popen]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    holder = _hold(out)
    try:
        yield out, holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


def _verify(capsys, output: Path) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["verify", str(output)])
    return code, capsys.readouterr().out.splitlines()


# -- current_holder: read-only, never takes the lock ------------------------------------------------------


def test_no_lock_file_and_a_finished_runs_record_mean_no_holder(tmp_path):
    location = locate(str(tmp_path))
    assert current_holder(location) is None
    assert not (tmp_path / LOCK_FILE).exists()  # never created by asking
    OutputLock(location, "done").acquire().release()
    assert (tmp_path / LOCK_FILE).read_bytes()  # the finished run's record stays; nobody holds it
    assert current_holder(location) is None


@pytest.mark.parametrize("table", [True, False], ids=["lock-table", "probe"])
def test_a_lock_held_by_another_process_is_named_and_left_alone(held, monkeypatch, table):
    out, holder = held
    if not table:  # no /proc/locks (not Linux): the non-blocking shared flock asks instead
        monkeypatch.setattr(ownership, "_locked_in_table", lambda stat: None)
    record = (out / LOCK_FILE).read_bytes()
    found = current_holder(locate(str(out)))
    assert found is not None and found.pid == holder.pid and found.host == socket.gethostname()
    assert found.run_id == "held-by-test" and found.started
    assert (out / LOCK_FILE).read_bytes() == record  # not truncated, not rewritten
    with pytest.raises(Exception, match=f"pid {holder.pid}"):
        OutputLock(locate(str(out)), "second").acquire()  # still held: asking took nothing from the holder
    holder.kill()
    holder.wait(timeout=30)
    assert current_holder(locate(str(out))) is None
    OutputLock(locate(str(out)), "after").acquire().release()  # and asking left nothing locked


def test_a_lock_held_in_this_process_through_another_descriptor_counts(tmp_path):
    """flock locks belong to an open file description: this process's own run is seen too."""
    lock = OutputLock(locate(str(tmp_path)), "mine").acquire()
    try:
        found = current_holder(locate(str(tmp_path)))
        assert found is not None and found.pid == os.getpid() and found.run_id == "mine"
        assert lock.held
    finally:
        lock.release()
    assert current_holder(locate(str(tmp_path))) is None


def test_an_object_store_lease_is_a_holder_until_stale(monkeypatch, tmp_path):
    from pyarrow import fs

    from pixart_batch.storage import Location

    class FakeObjectStore(Location):  # a local folder behaving like a bucket: a lease, no flock
        @property
        def is_local(self) -> bool:
            return False

    location = FakeObjectStore(fs.LocalFileSystem(), str(tmp_path), f"s3://bucket{tmp_path}")
    monkeypatch.setenv(ownership.SETTLE_ENV, "0.01")
    monkeypatch.setattr(ownership, "HEARTBEAT_S", 0.05)
    lock = OutputLock(location, "leased").acquire()
    try:
        found = current_holder(location)
        assert found is not None and found.run_id == "leased"
        assert lock.stop_heartbeat()  # the holder stops renewing (a lost node) ...
        monkeypatch.setenv(ownership.STALE_AFTER_ENV, "0.2")
        monkeypatch.setattr(ownership, "_dead_here", lambda holder: False)  # ... on another machine
        time.sleep(0.4)
        assert current_holder(location) is None  # ... and its lease went stale
    finally:
        lock.release()


def test_verify_help_documents_every_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = capsys.readouterr().out
    statuses = {EXIT_OK: "OK", EXIT_PROBLEMS: "FAILED", EXIT_IN_PROGRESS: "IN PROGRESS", 2: "error"}
    for code, word in statuses.items():
        assert f"\n  {code}  " in text and word in text, text
    assert "141" in text


# -- verify on real outputs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model) -> Path:
    """A finished tiny output of four images in two Parquet shards (local executor)."""
    from pixart_batch.run import run_generate

    root = tmp_path_factory.mktemp("verify-semantics")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    run_generate(tiny_config(**SMALL), str(prompts), str(root / "out"))
    return root / "out"


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "out")
    return tmp_path / "out"


def _shards(output: Path) -> list[Path]:
    return sorted((output / "data").rglob("train-*.parquet"))


@pytest.mark.slow
def test_an_intact_output_after_a_smaller_prompt_file_is_ok_with_a_note(copy, tmp_path, capsys):
    from pixart_batch.run import run_generate

    smaller = tmp_path / "smaller.txt"
    smaller.write_text("\n".join(PROMPTS[:2]) + "\n")
    run_generate(tiny_config(**SMALL), str(smaller), str(copy))
    code, lines = _verify(capsys, copy)
    assert code == EXIT_OK, lines
    (note,) = [line for line in lines if line.startswith("note: ")]
    assert note.startswith("note: 2 images are not in the latest plan (e.g. ") and "not a problem" in note
    assert not [line for line in lines if line.startswith("problem: ")]
    assert lines[-1] == "OK: 4 images in 2 shards (1 embedding-store part), 0 problems"


@pytest.mark.slow
def test_during_a_live_run_verify_names_the_holder_and_its_progress(copy, capsys):
    _shards(copy)[1].unlink()  # two planned images not made yet
    holder = _hold(copy)
    try:
        code, lines = _verify(capsys, copy)
        text = "\n".join(lines)
        assert code == EXIT_IN_PROGRESS, text
        assert "FAILED" not in text and "re-run" not in text and "problem:" not in text
        (note,) = [line for line in lines if line.startswith("note: ")]
        running = f"a run is writing this output (host {socket.gethostname()}, pid {holder.pid}"
        assert f"{running}, started " in note
        assert "run held-by-test)" in note and "2 of 4 planned images committed" in note
        assert lines[-1] == "IN PROGRESS: 2 images in 1 shard (1 embedding-store part), 0 problems"
        report = status(str(copy))
        assert report["running"] and f"pid {holder.pid}" in report["running"]
        capsys.readouterr()
        assert main(["status", str(copy)]) == 0
        assert running in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait(timeout=30)
    code, lines = _verify(capsys, copy)  # the run is gone: the missing images are missing
    assert code == EXIT_PROBLEMS and lines[-1].startswith("FAILED: ")
    assert any(line.startswith("problem: 2 planned images are missing") for line in lines), lines


@pytest.mark.slow
def test_damage_still_fails_during_a_live_run(copy, capsys):
    shard = _shards(copy)[0]
    shard.write_bytes(shard.read_bytes()[:100])
    holder = _hold(copy)
    try:
        code, lines = _verify(capsys, copy)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert code == EXIT_PROBLEMS, lines
    assert any(line.startswith(f"problem: {shard}: damaged shard (") for line in lines), lines
    assert any(line.startswith("note: a run is writing this output (") for line in lines), lines
    assert lines[-1].startswith("FAILED: ") and lines[-1].endswith(", 1 problem")


# -- a closed pipe: quiet, exit 141 (cli.EXIT_CLOSED_PIPE), for every command -----------------------------


def _into_closed_pipe(args: list[str]) -> tuple[int, str]:
    """``pixart-batch ARGS | true``, made certain: the reader is gone before the command writes a byte."""
    read, write = os.pipe()
    os.close(read)
    try:
        command = [sys.executable, "-m", "pixart_batch", *args]
        done = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, env=cli_env())
    finally:
        os.close(write)
    return done.returncode, done.stderr


def _into_head(args: list[str]) -> tuple[int, str, str]:
    """``pixart-batch ARGS | head -1`` in a shell: the command's exit status, what head printed, and stderr
    (head writes nothing there)."""
    command = " ".join(f"'{arg}'" for arg in [sys.executable, "-m", "pixart_batch", *args])
    script = f'{command} | head -1; exit "${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=cli_env())
    return done.returncode, done.stdout, done.stderr


def _no_traceback(stderr: str) -> None:
    words = ("Traceback", "BrokenPipeError", "Exception ignored")
    assert not [word for word in words if word in stderr], stderr


def test_plan_into_a_closed_pipe_exits_quietly(tiny_model):
    prompts = Path(__file__).parent.parent / "examples" / "prompts.txt"
    args = ["plan", str(prompts), "--model", str(tiny_model)]
    code, stderr = _into_closed_pipe(args)
    _no_traceback(stderr)
    assert code == 141
    code, out, stderr = _into_head(args)
    _no_traceback(stderr)
    assert code in (0, 141) and out.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["verify"]])
def test_status_and_verify_into_a_closed_pipe_exit_quietly(finished, command):
    args = [*command[:1], str(finished), *command[1:]]
    code, stderr = _into_closed_pipe(args)
    _no_traceback(stderr)
    assert code == 141
    code, out, stderr = _into_head(args)
    _no_traceback(stderr)
    assert code in (0, 141) and out.count("\n") == 1 and stderr == ""


# -- `-m "not slow"` starts no Ray (tests/conftest.py) ----------------------------------------------------


def test_a_test_not_marked_slow_may_not_start_ray():
    from pixart_batch.errors import UserError
    from pixart_batch.execution import ExecutionSpec
    from pixart_batch.executors.ray import init_ray

    assert os.environ.get("PIXART_BATCH_FORBID_RAY") == "1"  # inherited by the CLI subprocesses a test runs
    with pytest.raises(UserError, match="PIXART_BATCH_FORBID_RAY"):
        init_ray(ExecutionSpec.build(tiny_config()))  # refused before it looks at any Ray, running or not
