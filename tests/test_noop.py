"""Nothing to do costs little (issue 22.3): a re-run of a finished job decides from the output's own files
that nothing is left, imports no torch, diffusers or Ray and starts no executor; anything that changed —
a setting, the prompt file, the checkpoint's files, a shard or a store part lost or damaged — is never
taken for nothing to do: the full path runs and generates or refuses as before.

In-process (the local executor) and not slow: no test here starts Ray (``--executor ray`` re-runs rely on
the shortcut; the conftest's guard would refuse Ray's start)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import recipe_file, tiny_config

from pixart_batch.cli import main
from pixart_batch.errors import CheckpointError, OutputError
from pixart_batch.run import run_generate

PROMPTS = ["a red fox in the snow --ar 1:2", "a blue house by the sea", "a green tree --hw 96:160", "a cat"]
SMALL = {
    "output.rows_per_shard": 2,
    "output.row_group_size": 2,
    "output.store_rows_per_part": 2,
    "ray.executor": "local",
}
HEAVY = ("torch", "diffusers", "transformers", "ray")


def _config(checkpoint: Path, **extra):
    return tiny_config(**SMALL, **{"model.path": str(checkpoint)}, **extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model):
    """A finished in-process run, on its own copy of the tiny checkpoint (a local folder: its identity is
    its files' digest, wherever it lies)."""
    root = tmp_path_factory.mktemp("noop")
    checkpoint = root / "checkpoint"
    shutil.copytree(tiny_model, checkpoint)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    report = run_generate(_config(checkpoint), str(prompts), str(root / "out"))
    assert report["images_generated"] == len(PROMPTS) and not report["nothing_to_do"]
    assert report["plan_run"] and report["prompt_file"]["bytes"] == prompts.stat().st_size
    return root, checkpoint, prompts, root / "out"


@pytest.fixture
def copy(finished, tmp_path):
    root, checkpoint, prompts, output = finished
    target = tmp_path / "out"
    shutil.copytree(output, target)
    return checkpoint, prompts, target


def _snapshot(directory: Path, *parts: str) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and str(p.relative_to(directory)).startswith(parts)
    }


def _shards(output: Path) -> list[Path]:
    return sorted((output / "data").rglob("*.parquet"))


def test_a_finished_run_again_is_nothing_to_do_and_touches_no_data(copy):
    checkpoint, prompts, output = copy
    kept: tuple[str, ...] = ("data/", "plan/", "embeddings/", "README.md", "sample_grid.jpg")
    kept += ("settings.json", "plan.json", "store.json")
    before = _snapshot(output, *kept)
    report = run_generate(_config(checkpoint), str(prompts), str(output))
    assert report["nothing_to_do"] and report["executor"] == "local"
    assert (report["images_generated"], report["images_skipped"], report["images_planned"]) == (0, 4, 4)
    captions = len(PROMPTS) + 1  # and the negative prompt
    assert (report["embeddings_encoded"], report["embeddings_reused"]) == (0, captions)
    assert sum(report["buckets"].values()) == 4 and report["quarantined"] == []
    assert _snapshot(output, *kept) == before
    assert json.loads((output / "run_report.json").read_text())["nothing_to_do"]
    again = run_generate(_config(checkpoint), str(prompts), str(output))  # a no-op's report leads to a no-op
    assert again["nothing_to_do"] and again["plan_run"] == report["plan_run"]
    assert main(["verify", str(output)]) == 0


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_nothing_to_do_imports_no_torch_diffusers_or_ray(copy, tmp_path, executor):
    """Through the CLI in a fresh interpreter: by the end no heavy module was imported (and under the
    conftest's guard the Ray executor could not have started Ray)."""
    checkpoint, prompts, output = copy
    config = recipe_file(tmp_path / "recipe.yaml", {**SMALL, "model.path": str(checkpoint)})
    argv = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]
    argv += ["--executor", executor]
    code = (
        "import json, sys\n"
        "from pixart_batch.cli import main\n"
        f"code = main({argv!r})\n"
        f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, []], done.stdout + done.stderr
    assert "nothing to do" in done.stderr and "(nothing started)" in done.stderr
    assert json.loads((output / "run_report.json").read_text())["executor"] == executor


def test_a_changed_setting_is_refused_as_before(copy, capsys):
    checkpoint, prompts, output = copy
    with pytest.raises(OutputError, match="generation.num_inference_steps"):
        run_generate(_config(checkpoint, **{"generation.num_inference_steps": 5}), str(prompts), str(output))
    more = run_generate(_config(checkpoint, **{"generation.images_per_prompt": 2}), str(prompts), str(output))
    assert not more["nothing_to_do"] and (more["images_generated"], more["images_skipped"]) == (4, 4)


def test_one_prompt_added_is_generated(copy, tmp_path):
    checkpoint, prompts, output = copy
    grown = tmp_path / "grown.txt"
    grown.write_text(prompts.read_text() + "a purple flower\n")
    report = run_generate(_config(checkpoint), str(grown), str(output))
    assert not report["nothing_to_do"] and (report["images_generated"], report["images_skipped"]) == (1, 4)
    assert run_generate(_config(checkpoint), str(grown), str(output))["nothing_to_do"]


def test_the_same_prompts_in_other_bytes_are_planned_again(copy, tmp_path):
    """Other bytes (here one more blank line) are not the file the plan was made from: planned again."""
    checkpoint, prompts, output = copy
    other = tmp_path / "other.txt"
    other.write_text(prompts.read_text() + "\n")
    report = run_generate(_config(checkpoint), str(other), str(output))
    assert not report["nothing_to_do"] and (report["images_generated"], report["images_skipped"]) == (0, 4)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_lost_or_damaged_shard_is_made_again(copy, damage):
    checkpoint, prompts, output = copy
    shard = _shards(output)[0]
    if damage == "deleted":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    report = run_generate(_config(checkpoint), str(prompts), str(output))
    assert not report["nothing_to_do"] and report["images_generated"] == 2  # rows_per_shard 2
    assert len(report["quarantined"]) == (damage == "truncated")
    assert main(["verify", str(output)]) == 0


@pytest.mark.parametrize("damage", ["store deleted", "part truncated"])
def test_captions_missing_from_the_store_are_encoded_again(copy, damage):
    checkpoint, prompts, output = copy
    if damage == "store deleted":
        shutil.rmtree(output / "embeddings")
    else:
        part = sorted((output / "embeddings").rglob("part-*.parquet"))[0]
        part.write_bytes(part.read_bytes()[:100])
    report = run_generate(_config(checkpoint), str(prompts), str(output))
    assert not report["nothing_to_do"] and report["images_generated"] == 0
    assert report["embeddings_encoded"] > 0
    assert main(["verify", str(output)]) == 0


def test_a_changed_checkpoint_file_is_never_nothing_to_do(copy, tmp_path):
    checkpoint, prompts, output = copy
    moved = tmp_path / "moved-checkpoint"
    shutil.copytree(checkpoint, moved)
    assert run_generate(_config(moved), str(prompts), str(output))["nothing_to_do"]  # same files elsewhere

    config_path = moved / "scheduler" / "scheduler_config.json"
    original = config_path.read_text()
    scheduler = json.loads(original)
    scheduler["beta_end"] = scheduler.get("beta_end", 0.02) * 1.01
    config_path.write_text(json.dumps(scheduler))
    with pytest.raises(OutputError, match="setting 'checkpoint'"):
        run_generate(_config(moved), str(prompts), str(output))
    config_path.write_text(original)

    weights = sorted((moved / "transformer").glob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a weight's last byte: the header (and so the weight check) still passes
    weights.write_bytes(bytes(data))
    with pytest.raises((OutputError, CheckpointError), match="checkpoint"):
        run_generate(_config(moved), str(prompts), str(output))


def test_a_dry_run_or_encode_is_never_shortcut(copy):
    checkpoint, prompts, output = copy
    dry = run_generate(_config(checkpoint), str(prompts), str(output), dry_run=True)
    assert dry["dry_run"] and not dry["nothing_to_do"] and dry["images_skipped"] == 4
    encoded = run_generate(_config(checkpoint), str(prompts), str(output), encode_only=True)
    assert encoded["encode_only"] and not encoded["nothing_to_do"]
    # The encode's report is the latest: the next generate goes through the pipeline once, then no more.
    assert not run_generate(_config(checkpoint), str(prompts), str(output))["nothing_to_do"]
    assert run_generate(_config(checkpoint), str(prompts), str(output))["nothing_to_do"]


CLASSES = """\
classes:
  tabby cat: [tabby cat, tabby]
  goldfish:
templates: ["a photo of a {}", "a drawing of a {}"]
images_per_class: 2
"""


def test_a_labelled_webdataset_output_too_and_a_damaged_tar_is_made_again(tmp_path, tiny_model):
    prompts = tmp_path / "classes.yaml"
    prompts.write_text(CLASSES)
    output = tmp_path / "out"
    config = tiny_config(**SMALL, **{"output.format": "webdataset"})
    first = run_generate(config, str(prompts), str(output))
    again = run_generate(config, str(prompts), str(output))
    assert again["nothing_to_do"] and again["labels"] == first["labels"]
    assert again["buckets"] == first["buckets"]
    assert (again["images_skipped"], again["prompts"]) == (first["images_generated"], first["prompts"])
    tar = sorted((output / "data").rglob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])  # its key index still lists every key
    report = run_generate(config, str(prompts), str(output))
    assert not report["nothing_to_do"] and report["images_generated"] == 2 and len(report["quarantined"]) == 1
    assert main(["verify", str(output)]) == 0


def test_the_same_bytes_read_through_other_columns_are_planned_again(tmp_path, tiny_model):
    """Explicit ids keep the keys, but the prompts come from another column: not the plan's prompts."""
    from pixart_batch.prompts import PromptSource

    table = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "fox", "prompt": "a red fox", "caption": "a fox, at night"},
        {"id": "cat", "prompt": "a cat", "caption": "a cat"},
    ]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output, config = tmp_path / "out", tiny_config(**SMALL)
    run_generate(config, str(table), str(output))
    assert run_generate(config, PromptSource(str(table)), str(output))["nothing_to_do"]  # the default columns
    captions = PromptSource(str(table), prompt_column="caption")
    report = run_generate(config, captions, str(output))
    assert not report["nothing_to_do"] and (report["images_generated"], report["images_skipped"]) == (0, 2)
    assert run_generate(config, captions, str(output))["nothing_to_do"]
