"""The format contract: every registered output format, and a small test-only one (:mod:`jsonl_format`),
goes through the public CLI's generate, a kill and resume, verify, damage and quarantine, score and
export on the in-process executor. Nothing here names a format's files: shards, rows and columns are
asked of the output's :class:`~pixart_batch.output.formats.OutputFormat`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import recipe_file
from jsonl_format import JsonlFormat
from runner import cli_env, kill_tree, wait_for

from pixart_batch.cli import main
from pixart_batch.output import open_output
from pixart_batch.output.formats import FORMATS, OutputFormat, register_format

TEST_FORMAT = JsonlFormat.name
PROMPTS = [
    "a red fox in the snow --ar 1:2",
    "a blue house by the sea",
    "a cute cat sitting on a chair",
    "a small boat on a lake --hw 80:80",
    "a lighthouse in the rain",
    "a bowl of fruit, oil painting",
]
WRAPPER = Path(__file__).parent / "jsonl_cli.py"


@pytest.fixture
def registered():
    unregister = register_format(TEST_FORMAT, JsonlFormat)
    yield
    unregister()


def _format(output: Path) -> OutputFormat:
    return open_output(str(output)).format


def _rows(output: Path) -> dict[str, list[dict]]:
    """``{shard: rows}`` of every committed shard, read through the output's format."""
    shards = _format(output)
    return {path: list(shards.read_rows(path)) for path in shards.shard_files()}


def _keys(output: Path) -> list[str]:
    return [row["key"] for rows in _rows(output).values() for row in rows]


def _planned(output: Path) -> list[str]:
    return sorted(open_output(str(output)).read_plan(["key"]).column("key").to_pylist())


def _images(output: Path) -> dict[str, bytes]:
    return {row["key"]: row["image"]["bytes"] for rows in _rows(output).values() for row in rows}


def _cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """The CLI in a subprocess that registers the test-only format first (killed with runner.kill_tree)."""
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, str(WRAPPER), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=cli_env(**env),
            start_new_session=True,
        )


def _generate_killed_then_resumed(tmp_path: Path, name: str, capsys) -> tuple[Path, list[str]]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    overrides = {"output.rows_per_shard": 2, "output.row_group_size": 1, "generation.num_inference_steps": 2}
    config = recipe_file(tmp_path / "recipe.yaml", overrides)
    output = tmp_path / "out"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    command += ["--executor", "local", "--output-format", name]
    log = tmp_path / "killed.log"

    # Killed after its first shard is committed, while the next one stalls before its commit.
    run = _start(command, log, PIXART_BATCH_SLOW="shard-commit:5")
    wait_for(lambda: (output / "settings.json").is_file() and bool(_format(output).shard_files()), run, log)
    kill_tree(run)
    done = _keys(output)
    assert 0 < len(done) < len(PROMPTS)

    code, text = _cli(capsys, *command)
    assert code == 0, text
    report = json.loads((output / "run_report.json").read_text())
    assert report["images_skipped"] == len(done) and report["images_generated"] == len(PROMPTS) - len(done)
    keys = _keys(output)
    assert sorted(keys) == sorted(set(keys)) == _planned(output) and len(keys) == len(PROMPTS)  # each once
    return output, command


def _damage_then_quarantine(output: Path, command: list[str], capsys) -> None:
    shard, rows = next(iter(_rows(output).items()))
    data = Path(shard).read_bytes()
    Path(shard).write_bytes(data[: len(data) // 2])
    code, text = _cli(capsys, "verify", str(output))
    assert code == 1 and f"{shard}: damaged shard" in text, text

    code, text = _cli(capsys, *command)
    assert code == 0, text
    report = json.loads((output / "run_report.json").read_text())
    assert [item["file"] for item in report["quarantined"]] == [shard]
    assert report["images_generated"] == len(rows)  # its images redone, and only those
    keys = _keys(output)
    assert sorted(keys) == sorted(set(keys)) == _planned(output) and len(keys) == len(PROMPTS)


def _files(output: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in (output / "data").rglob("*") if path.is_file()}


def _failed_rewrite_leaves_the_shard(output: Path) -> None:
    """A shard rewrite whose transform raises: every file as it was, no temporary left."""
    from pixart_batch import schema as S

    dataset = open_output(str(output))
    settings = dataset.read_settings() or {}
    before = _files(output)

    def fails(table):
        raise RuntimeError("the transform failed")

    with pytest.raises(RuntimeError, match="transform failed"):
        dataset.format.rewrite(dataset.shard_files()[0], settings, fails, S.shard_schema(settings))
    assert _files(output) == before


def _score(output: Path, capsys) -> None:
    before = _images(output)
    code, text = _cli(capsys, "score", str(output), "--model", "tiny")
    assert code == 0, text
    shards = _format(output)
    assert all("clip_score" in shards.columns(path) for path in shards.shard_files())
    rows = [row for found in _rows(output).values() for row in found]
    assert len(rows) == len(PROMPTS) and all(math.isfinite(row["clip_score"]) for row in rows)
    assert _images(output) == before  # the images' bytes as they were


def _export(output: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "export"
    code, text = _cli(capsys, "export", str(output), "--where", "seed >= 0", "--to", str(target))
    assert code == 0 and f"{len(PROMPTS)} of {len(PROMPTS)} rows exported" in text, text
    assert sorted(_keys(target)) == sorted(_keys(output))
    assert _images(target) == _images(output)
    code, text = _cli(capsys, "verify", str(target))
    assert code == 0, text


@pytest.mark.parametrize("name", [*FORMATS, TEST_FORMAT])
def test_generate_kill_resume_verify_damage_score_export(name, registered, tiny_model, tmp_path, capsys):
    output, command = _generate_killed_then_resumed(tmp_path, name, capsys)
    assert _format(output).name == name
    code, text = _cli(capsys, "verify", str(output))
    assert code == 0, text
    _damage_then_quarantine(output, command, capsys)
    code, text = _cli(capsys, "verify", str(output))
    assert code == 0, text
    _failed_rewrite_leaves_the_shard(output)
    _score(output, capsys)
    code, text = _cli(capsys, "verify", str(output))
    assert code == 0, text
    _export(output, tmp_path, capsys)


def test_a_registered_format_is_accepted_by_the_config_and_removed_again():
    from pixart_batch.config import OutputConfig
    from pixart_batch.errors import ConfigError

    unregister = register_format(TEST_FORMAT, JsonlFormat)
    try:
        assert OutputConfig(format=TEST_FORMAT).format == TEST_FORMAT
        with pytest.raises(ValueError, match="registered already"):
            register_format(TEST_FORMAT, JsonlFormat)
    finally:
        unregister()
    with pytest.raises(ConfigError, match="output.format"):
        OutputConfig(format=TEST_FORMAT)
