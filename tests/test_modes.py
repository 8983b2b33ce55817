"""``encode`` (the store only) and ``generate --dry-run`` (the plan only)."""

import json

import pytest
from helpers import tiny_config

from pixart_batch.audit import status
from pixart_batch.run import run_generate

pytestmark = pytest.mark.slow


def test_encode_only_then_generate_reuses_every_embedding(tmp_path, ray_session, tiny_model):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog --ar 1:2\na cat\n")  # a repeated caption is encoded once
    output = tmp_path / "out"
    report = run_generate(tiny_config(), str(prompts), str(output), encode_only=True)
    assert report["embeddings_encoded"] == 3 and report["images_generated"] == 0  # 2 captions + ""
    assert not list((output / "data").rglob("*.parquet"))
    report = run_generate(tiny_config(), str(prompts), str(output))
    assert (report["embeddings_encoded"], report["embeddings_reused"]) == (0, 3)
    assert report["images_generated"] == 3


def test_dry_run_plans_without_running_models(tmp_path, ray_session, tiny_model):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog --ar 1:2\na fox --hw 96:160\n")
    output = tmp_path / "out"
    report = run_generate(
        tiny_config(**{"generation.images_per_prompt": 3}), str(prompts), str(output), dry_run=True
    )
    assert report["images_planned"] == 9 and report["images_generated"] == 0
    assert not (output / "embeddings").exists() or not list((output / "embeddings").rglob("part-*.parquet"))
    assert sum(report["buckets"].values()) == 9 and len(report["buckets"]) == 3
    table = status(str(output))
    assert (
        table["total"] == {"planned": 9, "embedded": 0, "done": 0, "failed": 0} and table["plan"] == "dry run"
    )
    assert json.loads((output / "dry_run.json").read_text())["images"] == 9
    assert not (output / "plan.json").exists()  # a dry run never becomes the plan verify checks
    assert not (output / ".work").exists() or not list((output / ".work").rglob("*"))


def test_status_of_an_encode_only_output_and_of_a_dry_run_after_a_finished_run(
    tmp_path, ray_session, tiny_model
):
    from pixart_batch.audit import format_status

    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog --ar 1:2\n")
    output = tmp_path / "out"
    config = tiny_config(**{"ray.executor": "local", "generation.num_inference_steps": 2})
    run_generate(config, str(prompts), str(output), encode_only=True)
    table = status(str(output))
    assert table["captions"] == 3 and table["total"]["planned"] == 0
    assert "an encode-only output (pixart-batch encode): 3 captions in its embedding store" in format_status(
        table
    )
    run_generate(config, str(prompts), str(output))
    more = tmp_path / "more.txt"
    more.write_text("a cat\na dog --ar 1:2\na fox\na owl\n")
    run_generate(config, str(more), str(output), dry_run=True)
    assert (output / "dry_run_report.json").is_file()
    table = status(str(output))
    assert table["plan"] == "latest run" and table["total"]["planned"] == 2 and table["total"]["done"] == 2
    assert table["dry_run"] == {"planned": 4, "done": 2}
    assert "the latest dry run (dry_run.json) planned 4 images, 2 of them done" in format_status(table)
