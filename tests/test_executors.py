"""The two executors: the Ray pipeline and the in-process one make the same dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import copy_prompts, tiny_config
from PIL import Image

from pixart_batch.config import ConfigError
from pixart_batch.errors import UserError
from pixart_batch.execution import ExecutionSpec
from pixart_batch.executors import choose_executor
from pixart_batch.run import prepare_run, run_generate

RECIPE = Path(__file__).parent.parent / "configs" / "tiny.yaml"


def _rows(output) -> dict[str, dict]:
    rows = {}
    for path in sorted((output / "data").rglob("train-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            row["pixels"] = np.asarray(
                Image.open(io.BytesIO(row.pop("image")["bytes"])).convert("RGB"), dtype=np.int16
            )
            rows[row["key"]] = row
    return rows


@pytest.fixture(scope="module")
def both(tmp_path_factory, ray_session, tiny_model):
    root = tmp_path_factory.mktemp("executors")
    prompts = copy_prompts("mixed.txt", root)
    config = {"generation.images_per_prompt": 2, "output.rows_per_shard": 5}
    reports = {}
    reports["ray"] = run_generate(
        tiny_config(**config, **{"ray.executor": "ray"}), str(prompts), str(root / "ray")
    )
    # The local executor runs its stages in this process: record, as each DiT batch starts, how many
    # shards are already committed (visible under data/).
    import pixart_batch.stages.common as common

    committed_at_denoise: list[int] = []

    def record(point: str) -> None:
        if point == "denoise":
            committed_at_denoise.append(len(list((root / "local" / "data").rglob("train-*.parquet"))))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common, "stall", record)
        reports["local"] = run_generate(
            tiny_config(**config, **{"ray.executor": "local"}), str(prompts), str(root / "local")
        )
    reports["local"]["committed_at_denoise"] = committed_at_denoise
    return root, reports


@pytest.mark.slow
def test_ray_and_local_make_the_same_rows(both):
    root, reports = both
    assert reports["ray"]["executor"] == "ray" and reports["local"]["executor"] == "local"
    ray_rows, local_rows = _rows(root / "ray"), _rows(root / "local")
    assert ray_rows.keys() == local_rows.keys() and len(ray_rows) == reports["ray"]["images_planned"]
    for key, row in ray_rows.items():
        other = local_rows[key]
        for column in (
            "seed",
            "caption",
            "prompt",
            "width",
            "height",
            "bucket_width",
            "bucket_height",
            "scheduler",
        ):
            assert row[column] == other[column], (key, column)
        # Only the torch thread count differs (Ray gives a fractional-CPU actor one thread).
        assert np.abs(row["pixels"] - other["pixels"]).max() <= 2, key
    for name in ("images_planned", "images_generated", "embeddings_encoded", "buckets", "captions_empty"):
        assert reports["ray"][name] == reports["local"][name], name


@pytest.mark.slow
def test_local_shards_are_committed_as_they_fill(both):
    root, reports = both
    shards = sorted((root / "local" / "data").rglob("train-*.parquet"))
    sizes = [pq.ParquetFile(path).metadata.num_rows for path in shards]
    assert sum(sizes) == reports["local"]["images_generated"]
    assert (
        all(size <= 5 for size in sizes) and sum(size < 5 for size in sizes) <= 1
    )  # only the last one is short
    # Committed while the run was still generating: before the last DiT batch, every shard its
    # earlier batches filled was already under data/ (a run that commits at the end shows none).
    seen = reports["local"]["committed_at_denoise"]
    batch = 8  # the tiny recipe's stages.denoise.batch_size
    assert len(seen) >= 3 and seen == sorted(seen), seen
    assert all(count == (n * batch) // 5 for n, count in enumerate(seen)), seen


@pytest.mark.slow
def test_nothing_to_do_loads_no_model(both, monkeypatch):
    root, reports = both
    import pixart_batch.executors.local as local

    def refuse(name):
        raise AssertionError(f"loaded the {name} stage with nothing to do")

    monkeypatch.setattr(local, "stage_class", refuse)
    prompts = root / "mixed.txt"
    config = tiny_config(**{"generation.images_per_prompt": 2, "output.rows_per_shard": 5})
    again = run_generate(config, str(prompts), str(root / "local"))
    assert again["executor"] == "local"
    assert again["images_generated"] == 0 and again["embeddings_encoded"] == 0
    assert again["images_skipped"] == reports["local"]["images_planned"]
    assert json.loads((root / "local" / "run_report.json").read_text())["images_generated"] == 0


def test_auto_picks_local_only_for_small_runs_without_a_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = tiny_config(**{"ray.local_max_images": 10})
    assert choose_executor(ExecutionSpec.build(config), 10) == "local"
    assert choose_executor(ExecutionSpec.build(config), 11) == "ray"
    assert choose_executor(ExecutionSpec.build(tiny_config(**{"ray.address": "10.0.0.1:6379"})), 1) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # what ray job submit sets
    assert choose_executor(ExecutionSpec.build(config), 1) == "ray"
    assert choose_executor(ExecutionSpec.build(tiny_config(**{"ray.executor": "local"})), 10**9) == "local"


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"ray.executor": "spark"}, "ray.executor: must be one of auto, ray, local"),
        ({"ray.local_max_images": -1}, r"ray.local_max_images: -1 is out of range \(must be >= 0\)"),
    ],
)
def test_bad_executor_settings(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_config(**overrides)


def test_local_run_asking_for_a_gpu_without_one_is_refused_before_writing(tmp_path, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    prompts = copy_prompts("mixed.txt", tmp_path)
    output = tmp_path / "out"
    with pytest.raises(UserError, match="stages denoise ask for a GPU"):
        prepare_run(
            tiny_config(**{"ray.executor": "local", "stages.denoise.num_gpus": 1}), str(prompts), str(output)
        )
    assert not output.exists()


def test_a_local_run_imports_no_ray(tmp_path, tiny_model):
    """The in-process executor (and the application around it) never imports Ray: checked in a fresh
    process."""
    import subprocess
    import sys

    prompts = copy_prompts("mixed.txt", tmp_path)
    script = (
        "import sys, json\n"
        "from pixart_batch.config import load_config, with_overrides\n"
        "from pixart_batch.run import run_generate\n"
        f"config = with_overrides(load_config({str(RECIPE)!r}), {{'ray.executor': 'local'}})\n"
        f"report = run_generate(config, {str(prompts)!r}, {str(tmp_path / 'out')!r})\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "print(json.dumps({'made': report['images_generated'], 'ray': loaded}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["made"] > 0
    assert result["ray"] == []
