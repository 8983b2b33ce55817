"""Quality scores (``stages.score``, ``pixart-batch score``) on the tiny PixArt and the tiny CLIP:
the values plain ``transformers`` computes from the stored image and caption, both executors, the
after-the-fact command (same values, images untouched, resumable), one-line refusals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import recipe_file, tiny_config

from pixart_batch.cli import main
from pixart_batch.run import run_generate

PROMPTS = [
    "a red fox in the snow --ar 1:2",
    "a cute cat sitting on a chair",
    "a blue house by the sea --hw 80:80",
    "the dog and the cat of the house, " * 8,  # longer than the tiny CLIP's 16 tokens: truncated
]


@pytest.fixture(scope="module")
def clip_dir(_cache_dir) -> Path:
    from pixart_batch.tiny_clip import cached_tiny_clip

    return cached_tiny_clip()


@pytest.fixture(scope="module")
def head(tmp_path_factory, clip_dir) -> Path:
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("head") / "head.safetensors"
    generator = torch.Generator().manual_seed(3)
    save_file({"weight": torch.randn(1, 16, generator=generator), "bias": torch.tensor([0.5])}, str(path))
    return path


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def _config(executor="local", score=True, head=None, **extra):
    overrides = {"ray.executor": executor, "output.rows_per_shard": 2, "output.row_group_size": 1}
    if score:
        overrides.update(
            {"stages.score.enabled": True, "stages.score.model": "tiny", "stages.score.batch_size": 3}
        )
        overrides["stages.score.aesthetic_head"] = str(head) if head else None
    return tiny_config(**{**overrides, **extra})


def _rows(output: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    rows = {}
    for shard in sorted((output / "data").rglob("train-*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            rows[row["key"]] = row
    return rows


def _plain_scores(
    clip_dir: Path, rows: dict[str, dict], head: Path | None
) -> dict[str, tuple[float, float | None]]:
    """What a user computes with plain transformers from each stored image and its caption, one at a time."""
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir)
    tensors = load_file(str(head)) if head else None
    out = {}
    for key, row in rows.items():
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        inputs = processor(
            text=[row["caption"]], images=[image], return_tensors="pt", padding=True, truncation=True
        )
        with torch.no_grad():
            result = model(**inputs)
        image_embeds = result.image_embeds / result.image_embeds.norm(dim=-1, keepdim=True)
        text_embeds = result.text_embeds / result.text_embeds.norm(dim=-1, keepdim=True)
        clip = float(100 * (image_embeds * text_embeds).sum())
        aesthetic = float(image_embeds @ tensors["weight"].T + tensors["bias"]) if tensors else None
        out[key] = (clip, aesthetic)
    return out


@pytest.fixture(scope="module")
def scored(tmp_path_factory, prompts, head, tiny_model):
    output = tmp_path_factory.mktemp("scored") / "out"
    run_generate(_config(head=head), str(prompts), str(output))
    return output


def test_scores_equal_plain_transformers_on_the_stored_image(scored, clip_dir, head):
    rows = _rows(scored)
    assert len(rows) == len(PROMPTS)
    plain = _plain_scores(clip_dir, rows, head)
    for key, row in rows.items():
        assert np.isfinite(row["clip_score"]) and np.isfinite(row["aesthetic_score"])
        assert abs(row["clip_score"] - plain[key][0]) < 1e-3, key
        assert abs(row["aesthetic_score"] - plain[key][1]) < 1e-3, key
    settings = json.loads((scored / "settings.json").read_text())
    assert settings["score"]["model"] == "tiny" and settings["score"]["aesthetic_head"]
    from datasets import load_dataset

    dataset = load_dataset(str(scored), split="train")
    assert dataset.features["clip_score"].dtype == "float32" and "aesthetic_score" in dataset.features
    assert "clip_score" in (scored / "README.md").read_text()


def test_jpeg_scores_are_those_of_the_stored_jpeg(tmp_path, prompts, clip_dir, tiny_model):
    output = tmp_path / "out"
    run_generate(_config(**{"output.image_format": "jpeg"}), str(prompts), str(output))
    rows = _rows(output)
    plain = _plain_scores(clip_dir, rows, None)
    assert all(abs(row["clip_score"] - plain[key][0]) < 1e-3 for key, row in rows.items())
    assert all("aesthetic_score" not in row for row in rows.values())


def test_an_unscored_output_has_no_score_columns_and_the_guard_keeps_scored_outputs_scored(
    tmp_path, prompts, scored, capsys
):
    output = tmp_path / "plain"
    run_generate(_config(score=False), str(prompts), str(output))
    assert all("clip_score" not in row for row in _rows(output).values())
    assert "score" not in json.loads((output / "settings.json").read_text())
    # A scored output resumes scored: a run without scoring is refused (one line), nothing changes.
    before = {p: p.read_bytes() for p in (scored / "data").rglob("*.parquet")}
    recipe = recipe_file(tmp_path / "plain.yaml", {"ray.executor": "local"})
    capsys.readouterr()
    code = main(["generate", "--config", str(recipe), "--prompts", str(prompts), "--output", str(scored)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "setting 'score'" in err
    assert before == {p: p.read_bytes() for p in (scored / "data").rglob("*.parquet")}
    # And an unscored output is not scored by a generate run (the guard names the score command).
    with pytest.raises(Exception, match="pixart-batch score") as refused:
        run_generate(_config(), str(prompts), str(output))
    assert "setting 'score'" in str(refused.value) and "\n" not in str(refused.value)
    assert all("clip_score" not in row for row in _rows(output).values())


def test_score_command_gives_the_same_values_without_touching_images(tmp_path, prompts, scored, head, capsys):
    output = tmp_path / "out"
    run_generate(_config(score=False), str(prompts), str(output))
    before = _rows(output)
    capsys.readouterr()
    assert main(["score", str(output), "--model", "tiny", "--aesthetic-head", str(head)]) == 0
    after, reference = _rows(output), _rows(scored)
    assert after.keys() == before.keys() == reference.keys()
    for key, row in after.items():
        assert row["image"] == before[key]["image"] and row["sha256"] == before[key]["sha256"]
        assert {k: v for k, v in row.items() if "score" not in k} == before[key]
        assert abs(row["clip_score"] - reference[key]["clip_score"]) < 1e-3
        assert abs(row["aesthetic_score"] - reference[key]["aesthetic_score"]) < 1e-3
    settings = json.loads((output / "settings.json").read_text())
    assert settings["score"] == json.loads((scored / "settings.json").read_text())["score"]
    from datasets import load_dataset

    assert "clip_score" in load_dataset(str(output), split="train").features
    # Again: every shard is skipped; another model is refused in one line.
    capsys.readouterr()
    assert main(["score", str(output), "--model", "tiny", "--aesthetic-head", str(head)]) == 0
    assert "0 images in 0 shards" in capsys.readouterr().err
    assert main(["score", str(output), "--model", "tiny"]) == 2
    assert "already scored" in capsys.readouterr().err
    # A later generate run with the same scoring resumes the output (nothing to do), scored.
    config = _config(head=head)
    report = run_generate(config, str(prompts), str(output))
    assert report["images_generated"] == 0


def test_score_command_interrupted_then_resumed(tmp_path, prompts, monkeypatch):
    from pixart_batch import rescore

    output = tmp_path / "out"
    run_generate(_config(score=False, **{"output.rows_per_shard": 1}), str(prompts), str(output))
    shards = sorted((output / "data").rglob("train-*.parquet"))
    assert len(shards) == len(PROMPTS)
    from pixart_batch.output.formats import ParquetFormat

    real, calls = ParquetFormat.rewrite, []

    def dies_on_the_second(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(ParquetFormat, "rewrite", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        rescore.score_output(str(output), "tiny")
    monkeypatch.undo()
    import pyarrow.parquet as pq

    with_scores = [s for s in shards if "clip_score" in pq.read_schema(s).names]
    assert len(with_scores) == 1 and all(
        pq.read_table(s).num_rows == 1 for s in shards
    )  # each old or new, whole
    result = rescore.score_output(str(output), "tiny")
    assert result.shards_scored == len(PROMPTS) - 1 and result.shards_skipped == 1
    assert all("clip_score" in pq.read_schema(s).names for s in shards)
    assert not [p for p in output.rglob(".tmp-*")]


def test_bad_score_inputs_get_one_line(tmp_path, prompts, clip_dir, capsys):
    import torch
    from safetensors.torch import save_file

    output = tmp_path / "out"
    run_generate(_config(score=False), str(prompts), str(output))
    settings = (output / "settings.json").read_text()
    capsys.readouterr()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((clip_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"weight": torch.zeros(1, 7)}, str(wrong))
    cases = [
        (["--model", str(tmp_path / "missing")], "score model not found"),
        (["--model", str(pickled)], "only pickle weights (pytorch_model.bin)"),
        (["--model", "tiny", "--aesthetic-head", str(wrong)], "expected weight [1, 16]"),
        (["--model", "tiny", "--aesthetic-head", str(tmp_path / "nope.safetensors")], "no such file"),
    ]
    for flags, message in cases:
        assert main(["score", str(output), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert (output / "settings.json").read_text() == settings  # nothing changed
    # The same refusals for a generate run, before anything is written.
    fresh = tmp_path / "fresh"
    with pytest.raises(Exception, match="only pickle weights"):
        run_generate(_config(**{"stages.score.model": str(pickled)}), str(prompts), str(fresh))
    assert not fresh.exists()


def _tar_samples(output: Path) -> dict[str, dict]:
    import tarfile

    samples: dict[str, dict] = {}
    for tar in sorted((output / "data").rglob("*.tar")):
        with tarfile.open(tar) as handle:
            for member in handle:
                key, _, extension = member.name.partition(".")
                data = handle.extractfile(member)
                samples.setdefault(key, {})[extension] = data.read() if data is not None else b""
    return samples


def test_score_command_on_a_webdataset_output(tmp_path, prompts, scored, head):
    output = tmp_path / "out"
    run_generate(_config(score=False, **{"output.format": "webdataset"}), str(prompts), str(output))
    before = _tar_samples(output)
    assert main(["score", str(output), "--model", "tiny", "--aesthetic-head", str(head)]) == 0
    after, reference = _tar_samples(output), _rows(scored)
    assert after.keys() == before.keys() == reference.keys()
    for key, members in after.items():
        assert members["png"] == before[key]["png"] and members["txt"] == before[key]["txt"]
        row, old = json.loads(members["json"]), json.loads(before[key]["json"])
        assert {k: v for k, v in row.items() if "score" not in k} == old
        assert abs(row["clip_score"] - reference[key]["clip_score"]) < 1e-3
        assert abs(row["aesthetic_score"] - reference[key]["aesthetic_score"]) < 1e-3
    assert main(["verify", str(output)]) == 0
    from pixart_batch.rescore import score_output

    result_again = score_output(str(output), "tiny", aesthetic_head=str(head))
    assert result_again.shards_scored == 0 and result_again.shards_skipped >= 1


@pytest.mark.slow
def test_ray_executor_scores_as_the_local_one(tmp_path, prompts, scored, head, ray_session):
    output = tmp_path / "out"
    run_generate(_config("ray", head=head), str(prompts), str(output))
    rows, reference = _rows(output), _rows(scored)
    assert rows.keys() == reference.keys()
    for key, row in rows.items():
        assert abs(row["clip_score"] - reference[key]["clip_score"]) < 1e-3
        assert abs(row["aesthetic_score"] - reference[key]["aesthetic_score"]) < 1e-3


def test_sigkill_with_scoring_on_then_resume(tmp_path, prompts, scored, head):
    """Killed while a shard is being committed (scores made), then the same command: every row scored,
    the same values as an uninterrupted run."""
    from runner import kill_tree, run_cli, start_cli, wait_for

    overrides = {
        "ray.executor": "local",
        "output.rows_per_shard": 2,
        "output.row_group_size": 1,
        "stages.denoise.batch_size": 2,
        "stages.decode.batch_size": 2,
        "stages.score.enabled": True,
        "stages.score.model": "tiny",
        "stages.score.aesthetic_head": str(head),
    }
    recipe = recipe_file(tmp_path / "scored.yaml", overrides)
    output, log = tmp_path / "out", tmp_path / "runs.log"
    command = ["generate", "--config", str(recipe), "--prompts", str(prompts), "--output", str(output)]
    run = start_cli(command, log, PIXART_BATCH_SLOW="shard-commit:60")
    wait_for(lambda: any(p.name.startswith(".tmp-") for p in (output / "data").rglob("*")), run, log)
    kill_tree(run)
    assert run_cli(command, log) == 0, log.read_text()[-3000:]
    rows, reference = _rows(output), _rows(scored)
    assert rows.keys() == reference.keys()
    for key, row in rows.items():
        assert abs(row["clip_score"] - reference[key]["clip_score"]) < 1e-3
        assert abs(row["aesthetic_score"] - reference[key]["aesthetic_score"]) < 1e-3
