"""Crashes and resume: SIGKILL the whole run at several points, kill actors, failing images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import dataset_images, recipe_file, tiny_config
from runner import kill_tree, run_cli, start_cli, wait_for

from pixart_batch.prompts import read_prompts
from pixart_batch.run import run_generate

pytestmark = pytest.mark.slow

PROMPTS = [
    "a red fox in the snow --ar 1:2",
    "a blue house by the sea",
    "a green tree on a hill --hw 96:160",
    "<b>a golden</b> cup of coffee",
    "a purple flower in a garden --ar 2:1",
    "a silver robot walking in the city",
    "an old castle at night, moon and stars",
    "a small boat on a lake --hw 80:80",
    "a cute cat sitting on a chair",
    "a dragon flying over mountains --ar 3:4",
    "a bowl of fruit, oil painting",
    "a lighthouse in the rain",
]
SMALL_COMMITS: dict[str, dict[str, object]] = {
    "output": {"store_rows_per_part": 2, "rows_per_shard": 2, "row_group_size": 2},
    "stages": {
        "encode": {"batch_size": 2},
        "denoise": {"batch_size": 2},
        "decode": {"batch_size": 2},
        "write": {"batch_size": 2},
    },
    "generation": {"images_per_prompt": 2},
}


def _config_file(directory: Path) -> Path:
    return recipe_file(directory / "small-commits.yaml", _config_overrides())


def _config_overrides() -> dict:
    flat = {}
    for section, values in SMALL_COMMITS.items():
        for key, value in values.items():
            if isinstance(value, dict):
                flat.update({f"{section}.{key}.{k}": v for k, v in value.items()})
            else:
                flat[f"{section}.{key}"] = value
    return flat


@pytest.fixture(scope="module")
def workload(tmp_path_factory, ray_session, tiny_model):
    """The prompts, the recipe, and the images of an uninterrupted run (the reference)."""
    root = tmp_path_factory.mktemp("resume")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = _config_file(root)
    run_generate(tiny_config(**_config_overrides()), str(prompts), str(root / "reference"))
    return prompts, config, _images(root / "reference")


def _images(output: Path) -> dict[str, np.ndarray]:
    return dataset_images(output)


def _store_keys(output: Path) -> list[str]:
    import pyarrow.parquet as pq

    keys: list[str] = []
    for part in sorted(output.glob("embeddings/*/parts/*/part-*.parquet")):
        keys += pq.read_table(part, columns=["caption_key"]).column(0).to_pylist()
    return keys


def _shards(output: Path) -> list[Path]:
    """Committed shards: Parquet files, or tars (a tar is committed after its key index)."""
    return sorted([*(output / "data").rglob("train-*.parquet"), *(output / "data").rglob("[0-9]*.tar")])


def _command(prompts, config, output, executor: str = "auto", output_format: str = "parquet") -> list[str]:
    return [
        "generate",
        *("--config", str(config), "--prompts", str(prompts), "--output", str(output)),
        *("--executor", executor, "--output-format", output_format),
    ]


# The format axis on the local executor only (CI time); test_writers.py runs Ray with WebDataset.
@pytest.mark.parametrize(
    "executor, output_format", [("ray", "parquet"), ("local", "parquet"), ("local", "webdataset")]
)
def test_sigkill_during_encode_denoise_and_shard_writes_then_resume(
    tmp_path, workload, executor, output_format
):
    prompts, config, reference = workload
    output = tmp_path / "out"
    command = _command(prompts, config, output, executor, output_format)
    log = tmp_path / "runs.log"

    # 1. Killed while encoding: some store parts committed, not all.
    run = start_cli(command, log, PIXART_BATCH_SLOW="encode:0.7")
    wait_for(lambda: len(_store_keys(output)) >= 2, run, log)
    kill_tree(run)
    encoded_before = set(_store_keys(output))
    assert 0 < len(encoded_before) < len(PROMPTS) + 1
    assert not _shards(output)

    # 2. Killed while denoising: the store is finished, some shards are committed.
    run = start_cli(command, log, PIXART_BATCH_SLOW="denoise:0.7")
    wait_for(lambda: len(_shards(output)) >= 1, run, log)
    kill_tree(run)
    assert (
        f"{len(encoded_before)} reused" in log.read_text()
    )  # the first run's embeddings were not re-encoded
    store_keys = _store_keys(output)
    assert (
        len(store_keys) == len(set(store_keys)) == len(PROMPTS) + 1
    )  # every caption + the empty negative, once each
    done_before = {path.name for path in _shards(output)}

    # 3. Killed while a shard is being written (its temporary file exists, not yet renamed).
    run = start_cli(command, log, PIXART_BATCH_SLOW="shard-commit:60")
    wait_for(lambda: any(p.name.startswith(".tmp-") for p in (output / "data").rglob("*")), run, log)
    kill_tree(run)
    assert done_before <= {path.name for path in _shards(output)}
    partial = _images(output)  # datasets skips the half-committed temporary
    assert 0 < len(partial) < len(reference)

    # 4. The same command finishes the job.
    assert run_cli(command, log) == 0, log.read_text()[-3000:]
    report = json.loads((output / "run_report.json").read_text())
    assert report["embeddings_encoded"] == 0 and report["embeddings_reused"] == len(PROMPTS) + 1
    assert report["images_skipped"] == len(partial)
    assert report["images_generated"] == len(reference) - len(partial)
    assert report["temporaries_removed"] >= 1
    assert not [p for p in output.rglob(".tmp-*")]
    final = _images(output)
    assert final.keys() == reference.keys()
    for key, pixels in reference.items():
        assert np.abs(final[key] - pixels).max() <= 1, key
    assert run_cli(["verify", str(output)], log) == 0, log.read_text()[-2000:]


def test_killed_dit_actor_is_restarted_and_the_run_completes(tmp_path, workload):
    import psutil

    prompts, config, reference = workload
    output = tmp_path / "out"
    log = tmp_path / "run.log"
    run = start_cli(_command(prompts, config, output, "ray"), log, PIXART_BATCH_SLOW="denoise:0.5")

    def dit_actor():
        for proc in psutil.process_iter(["cmdline"]):
            if "MapBatches(Denoiser)" in " ".join(proc.info["cmdline"] or []) and proc.pid != run.pid:
                return proc
        return None

    wait_for(lambda: len(_shards(output)) >= 1 and dit_actor() is not None, run, log)
    victim = dit_actor()
    victim.kill()
    try:
        assert run.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        kill_tree(run)
    final = _images(output)
    assert final.keys() == reference.keys()
    for key, pixels in reference.items():
        assert np.abs(final[key] - pixels).max() <= 1, key


def test_an_image_that_keeps_failing_becomes_a_failure_row(tmp_path, workload):
    prompts, config, reference = workload
    output = tmp_path / "out"
    log = tmp_path / "run.log"
    bad = f"{read_prompts(prompts)[3].prompt_id}-00001"
    assert run_cli(_command(prompts, config, output), log, PIXART_BATCH_FAULTS=f"denoise:{bad}") == 1
    assert "1 images failed" in log.read_text()
    report = json.loads((output / "run_report.json").read_text())
    assert report["images_failed"] == 1 and report["images_generated"] == len(reference) - 1
    import pyarrow.parquet as pq

    failures = pq.read_table(next((output / "failures").glob("*.parquet"))).to_pylist()
    assert [row["key"] for row in failures] == [bad] and "injected fault" in failures[0]["error"]
    assert bad not in _images(output)
    assert run_cli(["verify", str(output)], log) == 1
    from pixart_batch.audit import status as output_status

    status = output_status(str(output))
    assert status["total"]["failed"] == 1 and status["total"]["done"] == len(reference) - 1

    # Without the fault, the same command retries only the failed image.
    assert run_cli(_command(prompts, config, output), log) == 0
    report = json.loads((output / "run_report.json").read_text())
    assert report["images_generated"] == 1 and report["images_failed"] == 0
    assert _images(output).keys() == reference.keys()
    assert run_cli(["verify", str(output)], log) == 0
