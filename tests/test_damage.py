"""Damaged state, systemic faults, concurrent runs and foreign directories: never a traceback, never a
silent loss. Each test starts from a copy of one finished tiny output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import dataset_images, recipe_file, tiny_config
from runner import kill_tree, run_cli, start_cli, wait_for

from pixart_batch.cli import main
from pixart_batch.run import run_generate

pytestmark = pytest.mark.slow

PROMPTS = [
    f"a {color} {thing}"
    for color in ("red", "blue", "green")
    for thing in ("fox in the snow", "house by the sea", "tree on a hill")
]
SMALL = {
    "output.rows_per_shard": 3,
    "output.row_group_size": 3,
    "output.store_rows_per_part": 3,
    "stages.encode.batch_size": 3,
    "stages.denoise.batch_size": 3,
    "stages.decode.batch_size": 3,
}


def _images(output: Path) -> dict[str, np.ndarray]:
    return dataset_images(output)


def _config_file(directory: Path, **extra) -> Path:
    return recipe_file(directory / "recipe.yaml", {**SMALL, **extra})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_session, tiny_model):
    root = tmp_path_factory.mktemp("damage")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    run_generate(tiny_config(**SMALL), str(prompts), str(root / "out"))
    return prompts, root / "out", _images(root / "out")


@pytest.fixture(scope="module")
def finished_webdataset(tmp_path_factory, ray_session, tiny_model):
    root = tmp_path_factory.mktemp("damage-wds")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    run_generate(tiny_config(**SMALL, **{"output.format": "webdataset"}), str(prompts), str(root / "out"))
    return prompts, root / "out", _images(root / "out")


@pytest.fixture
def copy(finished, tmp_path):
    prompts, output, reference = finished
    target = tmp_path / "out"
    shutil.copytree(output, target)
    return prompts, target, reference


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _generate(prompts, output, *extra) -> list[str]:
    return [
        "generate",
        "--config",
        "configs/tiny.yaml",
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        *extra,
    ]


@pytest.mark.parametrize("output_format", ["parquet", "webdataset"])
def test_damaged_shard_and_store_part_are_named_set_aside_and_redone(
    request, tmp_path, capsys, output_format
):
    import pyarrow.parquet as pq

    fixture = "finished" if output_format == "parquet" else "finished_webdataset"
    prompts, original, reference = request.getfixturevalue(fixture)
    output = tmp_path / "out"
    shutil.copytree(original, output)
    if output_format == "parquet":
        shard = sorted((output / "data").rglob("train-*.parquet"))[0]
        rows_in_shard = pq.read_metadata(shard).num_rows
    else:
        shard = sorted((output / "data").rglob("*.tar"))[0]
        rows_in_shard = pq.read_metadata(
            shard.with_name(shard.name.replace(".tar", ".keys.parquet"))
        ).num_rows
    part = sorted((output / "embeddings").rglob("part-*.parquet"))[0]
    captions_in_part = pq.read_metadata(part).num_rows
    _truncate(shard)
    _truncate(part)
    code, text = _cli(capsys, "verify", str(output))
    assert code == 1 and str(shard) in text and str(part) in text

    config = tiny_config(**SMALL, **{"output.format": output_format})
    report = run_generate(config, str(prompts), str(output))
    moved = {Path(item["file"]).name for item in report["quarantined"]}
    assert moved == {shard.name, part.name}
    quarantined = sorted(
        p.name for p in (output / "quarantine").rglob("*") if p.is_file() and not p.name.endswith(".txt")
    )
    companions = [] if output_format == "parquet" else [shard.name.replace(".tar", ".keys.parquet")]
    assert quarantined == sorted([shard.name, part.name, *companions])  # a tar goes aside with its key index
    assert (
        report["images_generated"] == rows_in_shard
        and report["images_skipped"] == len(PROMPTS) - rows_in_shard
    )
    assert report["embeddings_encoded"] == captions_in_part  # only the lost captions are encoded again
    final = _images(output)
    assert final.keys() == reference.keys()
    for key, pixels in reference.items():
        assert np.abs(final[key] - pixels).max() <= 1, key
    assert main(["verify", str(output)]) == 0


@pytest.mark.parametrize(
    "name, garbage, commands",
    [
        ("plan.json", b"{not json", ("status", "verify", "generate")),
        ("store.json", b"[1, 2]", ("verify", "status", "generate")),
        ("settings.json", b'["a", "list"]', ("status", "verify", "generate")),
        ("plan.json", b'{"run": "../../etc", "images": 3}', ("status", "verify")),
    ],
)
def test_garbage_metadata_is_one_line_and_nothing_is_written(copy, capsys, name, garbage, commands):
    prompts, output, _ = copy
    (output / name).write_bytes(garbage)
    before = {str(p): p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}
    for command in commands:
        args = _generate(prompts, output) if command == "generate" else [command, str(output)]
        code, text = _cli(capsys, *args)
        errors = [line for line in text.splitlines() if line.startswith("pixart-batch:")]
        assert code == 2, (command, text)
        assert len(errors) == 1 and name in errors[0] and "Traceback" not in text, (command, text)
    after = {str(p): p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}
    assert after == before


def test_missing_settings_json_the_shards_still_guard(copy, capsys):
    prompts, output, _ = copy
    (output / "settings.json").unlink()
    code, text = _cli(capsys, *_generate(prompts, output, "--steps", "5"))
    assert code == 2 and "generation.num_inference_steps" in text


def test_foreign_directory_is_refused_and_untouched(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "README.md").write_text("my notes")
    (foreign / ".tmp-0123456789ab-precious").write_text("not a temporary of yours")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    before = sorted((p.name, p.read_bytes()) for p in foreign.iterdir())
    code, text = _cli(capsys, *_generate(prompts, foreign))
    assert code == 2 and "not written by pixart-batch" in text and "README.md" in text
    assert sorted((p.name, p.read_bytes()) for p in foreign.iterdir()) == before


def test_cleanup_never_follows_a_symlink_out_of_the_output(copy, tmp_path, capsys):
    prompts, output, _ = copy
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / ".tmp-0123456789ab-victim.parquet"
    victim.write_text("someone else's file")
    (outside / "keep.txt").write_text("keep")
    (output / "data" / "linked").symlink_to(outside, target_is_directory=True)
    (output / ".work").mkdir(exist_ok=True)
    shutil.rmtree(output / ".work")
    (output / ".work").symlink_to(outside, target_is_directory=True)
    report = run_generate(tiny_config(**SMALL), str(prompts), str(output))
    assert report["images_generated"] == 0
    assert victim.read_text() == "someone else's file" and (outside / "keep.txt").read_text() == "keep"


def test_dry_run_keeps_an_intact_output_verified_and_a_copy_checks_its_own_store(copy, capsys):
    prompts, output, _ = copy
    more = output.parent / "more.txt"
    more.write_text(prompts.read_text() + "a brand new prompt\n")
    report = run_generate(tiny_config(**SMALL), str(more), str(output), dry_run=True)
    assert report["dry_run"] and report["images_planned"] == len(PROMPTS) + 1
    assert main(["verify", str(output)]) == 0
    assert json.loads((output / "store.json").read_text())["uri"].startswith("embeddings/")
    moved = output.parent / "moved"
    shutil.move(output, moved)
    assert main(["verify", str(moved)]) == 0  # its own store, not the original's
    part = sorted((moved / "embeddings").rglob("part-*.parquet"))[0]
    _truncate(part)
    code, text = _cli(capsys, "verify", str(moved))
    assert code == 1 and str(part) in text


def test_two_runs_one_output_then_a_dead_holder_is_taken_over(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = _config_file(tmp_path)
    output, log_a, log_b = tmp_path / "out", tmp_path / "a.log", tmp_path / "b.log"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    first = start_cli(command, log_a, PIXART_BATCH_SLOW="denoise:1.0")
    second = start_cli(command, log_b, PIXART_BATCH_SLOW="denoise:1.0")
    try:
        deadline = time.monotonic() + 300
        while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        loser, loser_log, holder = (
            (second, log_b, first) if second.poll() is not None else (first, log_a, second)
        )
        assert loser.returncode == 2, loser_log.read_text()[-2000:]
        text = loser_log.read_text()
        assert (
            "another pixart-batch run holds this output" in text
            and f"pid {holder.pid}" in text
            and "Traceback" not in text
        )
        # SIGKILL the holder mid-run; the next run takes over and finishes.
        holder_log = log_a if holder is first else log_b
        wait_for(lambda: any((output / "data").rglob("train-*.parquet")), holder, holder_log)
        kill_tree(holder)
    finally:
        kill_tree(first)
        kill_tree(second)
    third = tmp_path / "c.log"
    assert run_cli(command, third) == 0, third.read_text()[-3000:]
    assert len(_images(output)) == len(PROMPTS)
    assert run_cli(["verify", str(output)], third) == 0


def test_object_store_lease_is_exclusive_until_stale(monkeypatch):
    """The object-store lock: a fresh lease refuses a second run; one not renewed for longer than
    ownership.stale_after_s() (a SIGKILLed holder, a lost node) is taken over."""
    from pyarrow import fs

    from pixart_batch import ownership
    from pixart_batch.errors import OutputError
    from pixart_batch.storage import Location

    class FakeObjectStore(Location):  # a local folder behaving like a bucket: no flock, no rename
        @property
        def is_local(self) -> bool:
            return False

    import tempfile

    root = tempfile.mkdtemp()
    location = FakeObjectStore(fs.LocalFileSystem(), root, f"s3://bucket{root}")
    monkeypatch.setenv(ownership.SETTLE_ENV, "0.05")
    monkeypatch.setattr(ownership, "HEARTBEAT_S", 0.05)
    first = ownership.OutputLock(location, "run1").acquire()
    with pytest.raises(OutputError, match=r"holds this output \(host .*, pid \d+, .*run run1"):
        ownership.OutputLock(location, "run2").acquire()
    assert first.stop_heartbeat()  # the holder dies: no more heartbeats
    monkeypatch.setenv(ownership.STALE_AFTER_ENV, "0.3")
    time.sleep(0.5)
    second = ownership.OutputLock(location, "run2").acquire()
    assert second.took_over and "run run1" in second.took_over
    second.release()
    assert not os.path.exists(os.path.join(root, ownership.LOCK_FILE))
    shutil.rmtree(root)


def test_systemic_failure_stops_early_with_the_cause(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"prompt number {i}" for i in range(40)) + "\n")
    config = _config_file(tmp_path, **{"failures.max_consecutive": 5})
    log = tmp_path / "run.log"
    output = tmp_path / "out"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    assert run_cli(command, log, PIXART_BATCH_FAULTS="denoise:*") == 1
    text = log.read_text()
    line = [row for row in text.splitlines() if row.startswith("pixart-batch: stopped:")]
    assert line and "injected fault in denoise" in line[0] and "failures.max_consecutive 5" in line[0], text[
        -3000:
    ]
    assert "Traceback" in text  # the original exception is logged once per failing group ...
    assert not list(output.rglob("train-*.parquet"))  # ... and the run stopped long before 40 images


def test_an_oom_batch_is_split_and_every_image_is_made(tmp_path, finished):
    prompts, _, reference = finished
    config = _config_file(tmp_path, **{"stages.denoise.batch_size": 6})
    log = tmp_path / "run.log"
    output = tmp_path / "out"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    assert run_cli(command, log, PIXART_BATCH_FAULTS="denoise-batch:2") == 0, log.read_text()[-3000:]
    final = _images(output)
    assert final.keys() == reference.keys()
    for key, pixels in reference.items():
        assert np.abs(final[key] - pixels).max() <= 1, key


def test_disk_full_is_one_line_leaves_nothing_partial_and_a_rerun_finishes(tmp_path, finished):
    prompts, _, reference = finished
    config = _config_file(tmp_path)
    output, log = tmp_path / "out", tmp_path / "run.log"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    assert run_cli(command, log, PIXART_BATCH_FULL="train-") == 1
    lines = [row for row in log.read_text().splitlines() if row.startswith("pixart-batch: error:")]
    assert lines and "no space left" in lines[-1], log.read_text()[-3000:]
    assert not list(output.rglob(".tmp-*")) and not list((output / "data").rglob("*.parquet"))
    assert run_cli(command, log) == 0, log.read_text()[-3000:]
    assert _images(output).keys() == reference.keys()


def test_sigterm_stops_like_ctrl_c(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = _config_file(tmp_path)
    output, log = tmp_path / "out", tmp_path / "run.log"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    run = start_cli(command, log, PIXART_BATCH_SLOW="denoise:1.0")
    try:
        wait_for(lambda: "planned" in log.read_text(), run, log)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=120) == 143
    finally:
        kill_tree(run)
    text = log.read_text()
    assert "terminated (SIGTERM)" in text and "re-run the same command" in text and "Traceback" not in text
    assert run_cli(command, log) == 0


def test_relative_paths_inside_a_ray_job_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    code, text = _cli(
        capsys,
        "generate",
        "--config",
        "configs/tiny.yaml",
        "--prompts",
        "examples/prompts.txt",
        "--output",
        "out/x",
    )
    assert code == 2 and "--output out/x" in text and "absolute path" in text


@pytest.mark.parametrize(
    "extra, needle", [(["--steps", "5000"], "generation.num_inference_steps"), ([], None)]
)
def test_limits_are_checked_before_anything_starts(tmp_path, capsys, extra, needle):
    if needle is None:
        prompts = tmp_path / "big.txt"
        prompts.write_text("a huge image --hw 100000:100000\n")
        code, text = _cli(capsys, *_generate(prompts, tmp_path / "out"))
        assert code == 2 and "larger than 1024 px" in text
    else:
        prompts = tmp_path / "p.txt"
        prompts.write_text("a cat\n")
        code, text = _cli(capsys, *_generate(prompts, tmp_path / "out", *extra))
        assert code == 2 and needle in text
    assert not (tmp_path / "out").exists()


def test_quarantine_on_an_object_store_copies_then_deletes(tmp_path):
    """Object stores have no rename: a damaged file is copied to quarantine/ first, then deleted."""
    from pyarrow import fs

    from pixart_batch.output import OutputDataset
    from pixart_batch.storage import Location

    class FakeObjectStore(Location):  # a local folder behaving like a bucket (no rename)
        @property
        def is_local(self) -> bool:
            return False

    shard = tmp_path / "data" / "run" / "0000" / "train-x.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"PAR1 truncated")
    output = OutputDataset(str(tmp_path))
    output.location = FakeObjectStore(fs.LocalFileSystem(), str(tmp_path), f"s3://bucket{tmp_path}")
    (damaged,) = output.find_damaged(output.shard_files(), "key")
    target = Path(output.quarantine(damaged, "run2"))
    assert not shard.exists() and target.read_bytes() == b"PAR1 truncated"
    assert target == tmp_path / "quarantine" / "run2" / "data" / "run" / "0000" / "train-x.parquet"
    assert damaged.reason in (target.parent / (target.name + ".reason.txt")).read_text()


def test_a_run_starting_beside_one_that_is_writing_its_marker_does_not_take_the_output_for_foreign(tmp_path):
    """The run holding the lock writes the marker first; in the instant before it is committed the
    folder holds only the lock file and the marker's temporary: that is not someone else's folder."""
    from pixart_batch.errors import OutputError
    from pixart_batch.ownership import check_ours
    from pixart_batch.storage import locate

    output = tmp_path / "out"
    output.mkdir()
    (output / ".pixart-batch.lock").write_text("")
    (output / ".tmp-0123456789ab-.pixart-batch").write_text("{")
    assert check_ours(locate(str(output))) is False  # new: the other run then waits for the lock
    (output / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not written by pixart-batch"):
        check_ours(locate(str(output)))


def test_a_metadata_key_of_the_wrong_type_is_named_with_its_type(tmp_path):
    from pixart_batch.errors import OutputError
    from pixart_batch.output import OutputDataset

    (tmp_path / "plan.json").write_text('{"run": "abc", "images": "3"}')
    with pytest.raises(
        OutputError, match=r"plan.json: damaged plan pointer \('images' missing or not an int\)"
    ):
        OutputDataset(str(tmp_path)).plan_pointer()
