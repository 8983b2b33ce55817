"""``status`` and ``verify`` on damaged outputs (damaged shards marked per bucket; one line per
problem; shards counted, not files) and a quiet console: ``--help``, ``plan``, ``status`` and
``verify`` print nothing on stderr that is not the project's own."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_config
from runner import cli_env

from pixart_batch import IMPORT_NOISE_LOGGERS
from pixart_batch.audit import format_status, status, verify
from pixart_batch.cli import configure_logging, main
from pixart_batch.run import run_generate

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "a red fox in the snow",
    "a blue house by the sea",
    "a green tree on a hill --ar 1:2",
    "a cat --ar 1:2",
]
SMALL = {"output.rows_per_shard": 2, "output.row_group_size": 2, "ray.executor": "local"}


def test_verbose_lets_the_third_party_import_warnings_speak():
    """Quiet by default (the package sets their level on import); --verbose hands them their own levels
    back."""
    code = (
        "import logging, pixart_batch as p; "
        "print({logging.getLogger(n).getEffectiveLevel() for n in p.IMPORT_NOISE_LOGGERS})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert done.stdout.strip() == f"{{{logging.ERROR}}}", done.stderr
    try:
        configure_logging(True)
        assert all(logging.getLogger(name).level == logging.NOTSET for name in IMPORT_NOISE_LOGGERS)
        configure_logging(False)
        assert all(logging.getLogger(name).level == logging.ERROR for name in IMPORT_NOISE_LOGGERS)
    finally:
        configure_logging(False)


def _made(root: Path, output_format: str) -> Path:
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    run_generate(tiny_config(**SMALL, **{"output.format": output_format}), str(prompts), str(root / "out"))
    return root / "out"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """One finished tiny output per format (local executor, 2 images per shard)."""
    return {name: _made(tmp_path_factory.mktemp(f"audit-{name}"), name) for name in ("parquet", "webdataset")}


@pytest.fixture(params=["parquet", "webdataset"])
def copy(request, outputs, tmp_path) -> tuple[str, Path]:
    target = tmp_path / "out"
    shutil.copytree(outputs[request.param], target)
    return request.param, target


def _shards(output: Path, output_format: str) -> list[Path]:
    return sorted((output / "data").rglob("*.tar" if output_format == "webdataset" else "train-*.parquet"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_status_marks_the_bucket_of_a_damaged_shard(copy, capsys):
    output_format, output = copy
    before = status(str(output))
    assert before["damaged"] == [] and before["total"]["done"] == len(PROMPTS)
    assert "damaged" not in format_status(before)
    shard = _shards(output, output_format)[0]
    _truncate(shard)

    report = status(str(output))
    (damaged,) = report["damaged"]
    assert damaged["path"] == str(shard) and "\n" not in damaged["reason"]
    code, out, err = _cli(capsys, "status", str(output))
    assert code == 0 and err == ""
    footer = out.splitlines()[-1]
    assert footer.startswith(f"damaged: 1 shard ({shard}: ")
    assert footer.endswith(
        f"run `pixart-batch verify {output}`; the next run sets it aside and redoes its images"
    )
    if output_format == "webdataset":  # the key index still reads: its images are attributed to their buckets
        assert damaged["images"] == 2 and sum(damaged["buckets"].values()) == 2
        assert report["total"]["done"] == len(PROMPTS) - 2  # not done: the next run makes them again
        (bucket,) = damaged["buckets"]
        (row,) = [line for line in out.splitlines() if line.strip().startswith(bucket)]
        assert row.endswith("damaged: 1 shard (2 images)")
    else:  # a truncated Parquet footer: its keys are gone, so its bucket is unknown
        assert damaged["images"] is None and damaged["buckets"] == {}
        assert "its keys are unreadable" in footer
        assert report["total"]["done"] == len(PROMPTS) - 2
    assert json.loads(_cli(capsys, "status", str(output), "--json")[1])["damaged"][0]["path"] == str(shard)


@pytest.mark.slow
def test_verify_counts_shards_and_prints_one_line_per_problem(copy, capsys):
    output_format, output = copy
    shards = _shards(output, output_format)
    assert len(shards) == 2
    code, out, _ = _cli(capsys, "verify", str(output))
    assert code == 0
    assert (
        out == f"OK: {len(PROMPTS)} images in 2 shards (1 embedding-store part), 0 problems\n"
    )  # not a tar's index too

    # A store part whose footer reads but whose first page does not: Arrow's text has embedded newlines.
    (part,) = sorted((output / "embeddings").rglob("part-*.parquet"))
    data = bytearray(part.read_bytes())
    data[4:68] = b"\xff" * 64
    part.write_bytes(bytes(data))
    _truncate(shards[1])
    code, out, _ = _cli(capsys, "verify", str(output))
    lines = out.splitlines()
    assert code == 1
    assert all(line.startswith("problem: ") for line in lines[:-1]), lines
    assert lines[-1] == f"FAILED: 2 images in 2 shards (1 embedding-store part), {len(lines) - 1} problems"
    (store_line,) = [line for line in lines if str(part) in line]
    assert "unreadable embedding-store part" in store_line and "thrift" in store_line
    assert any(line.startswith(f"problem: {shards[1]}: damaged shard (") for line in lines)
    assert len(verify(str(output)).problems) == len(lines) - 1


@pytest.mark.slow
def test_commands_print_nothing_foreign_on_stderr(outputs, tiny_model, tmp_path):
    """Without --verbose: no torchao "Failed to load" lines, no torch ``_pytree`` deprecation notes."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    commands = [
        ["--help"],
        ["plan", str(prompts), "--config", str(ROOT / "configs" / "tiny.yaml")],
        ["status", str(outputs["webdataset"])],
        ["verify", str(outputs["parquet"])],
    ]
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-m", "pixart_batch", *args],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        foreign = [
            line
            for line in done.stderr.splitlines()
            if not line.startswith(("[pixart-batch]", "pixart-batch:"))
        ]
        assert not foreign, (args, foreign[:5])
