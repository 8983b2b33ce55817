"""``pixart-batch plan``: counts per bucket as the run plans them, the cost model, one-line errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pixart_batch import estimate
from pixart_batch.cli import main
from pixart_batch.config import load_config, with_overrides
from pixart_batch.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
PROMPTS = str(
    ROOT / "examples" / "prompts.txt"
)  # mixed sizes: --ar 1:4, --ar 2:3, --hw 200:300 and the default square


def run_plan(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_counts_per_bucket_are_what_the_run_plans(tiny_model, capsys):
    from pixart_batch.expansion import choose_size
    from pixart_batch.prompts import read_prompts
    from pixart_batch.spec import RunSpec

    config = with_overrides(load_config(TINY), {"generation.images_per_prompt": 3})
    spec = RunSpec.build(config)  # the run's own geometry and bucket table
    expected: Counter = Counter()
    pixels = 0
    for record in read_prompts(PROMPTS):
        size = choose_size(record, config.generation, spec.geometry, spec.table)
        expected[f"{size.bucket_width}x{size.bucket_height}"] += 3
        pixels += 3 * size.width * size.height
    assert len(expected) >= 3

    code, out, err = run_plan(capsys, PROMPTS, "--config", TINY, "--images-per-prompt", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["buckets_width_x_height"] == dict(expected)
    assert data["images"] == 3 * data["prompts"] == sum(expected.values())
    assert data["output_bytes"] == int(pixels * estimate.BYTES_PER_PIXEL["png"])
    assert data["tokens_counted_by"] == "the checkpoint's tokenizer" and data["mean_tokens"] > 1
    assert data["usd_total"] is None  # no price given
    assert any("runs on CPU" in note for note in data["notes"])

    code, out, _ = run_plan(capsys, PROMPTS, "--config", TINY)
    assert code == 0 and "bucket (WIDTHxHEIGHT)" in out
    assert "512x128" in out  # "Arch --ar 1:4": --ar is height:width, so a wide bucket, printed width first


def test_price_from_config_and_flag(tiny_model, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(Path(TINY).read_text() + "estimate: {gpu: h200, usd_per_gpu_hour: 2.0}\n")
    code, out, err = run_plan(capsys, PROMPTS, "--config", str(config), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["usd_per_gpu_hour"] == 2.0
    assert data["usd_total"] == pytest.approx(data["gpu_hours"] * 2.0, abs=1e-4)
    assert data["usd_per_1000_images"] == pytest.approx(data["usd_total"] / data["images"] * 1000, rel=1e-2)
    code, out, _ = run_plan(capsys, PROMPTS, "--config", str(config), "--usd-per-gpu-hour", "4", "--json")
    assert json.loads(out)["usd_per_1000_images"] == pytest.approx(2 * data["usd_per_1000_images"], rel=1e-2)


def test_the_model_reproduces_the_measurement_and_scales():
    ref = estimate.MEASURED["h200"]
    assert estimate.seconds_per_image("h200", 1024, 1024, 20) == pytest.approx(ref["s_per_image"])
    # DiT part linear in steps, VAE part fixed
    dit = ref["s_per_image"] - ref["vae_s_per_image"]
    assert estimate.seconds_per_image("h200", 1024, 1024, 40) == pytest.approx(
        2 * dit + ref["vae_s_per_image"]
    )
    # 512²: a quarter of the tokens, less than a quarter of the DiT time (attention is quadratic)
    small = estimate.seconds_per_image("h200", 512, 512, 20)
    assert ref["vae_s_per_image"] / 4 < small < ref["s_per_image"] / 4
    with pytest.raises(ConfigError, match=r"^estimate.gpu: unknown GPU kind 'a100' \(known: h100, h200\)$"):
        with_overrides(load_config(None), {"estimate.gpu": "a100"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "a100"], "estimate.gpu: unknown GPU kind 'a100' (known: h100, h200)"),
        (
            ["--usd-per-gpu-hour", "-1"],
            "estimate.usd_per_gpu_hour: -1 is out of range (must be a finite number > 0)",
        ),
    ],
)
def test_bad_estimate_settings_are_one_line_errors(tiny_model, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    code, out, err = run_plan(capsys, str(prompts), *args)
    assert code == 2 and out == ""
    assert err == f"pixart-batch: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]  # nothing written


def test_bad_config_section_is_refused(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("estimate: {gpu: tpu}\n")
    code, _, err = run_plan(capsys, PROMPTS, "--config", str(config))
    assert code == 2 and err.count("\n") == 1 and "estimate.gpu: unknown GPU kind 'tpu'" in err


def test_bad_prompt_file_is_a_one_line_error(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog --ar 0:1\n")
    code, out, err = run_plan(capsys, str(prompts), "--config", TINY)
    assert code == 2 and out == "" and err.count("\n") == 1 and f"{prompts}:2:" in err
    code, _, err = run_plan(capsys, str(tmp_path / "missing.txt"))
    assert code == 2 and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


def test_plan_is_listed_in_the_readme():
    assert "pixart-batch plan" in (ROOT / "README.md").read_text()


def test_one_source_per_fact():
    from pixart_batch import config, measured

    assert tuple(measured.BYTES_PER_PIXEL) == config.IMAGE_FORMATS  # every image format has a size constant
    assert config.DTYPES == tuple(measured.DTYPE_BYTES)
    assert estimate.MEASURED is measured.MEASURED and estimate.gpu_kinds() == measured.gpu_kinds()


def test_the_store_estimate_counts_distinct_captions(tiny_model, tmp_path, capsys):
    """3,000 identical prompts store one caption (and the negative prompt once), as the run does."""
    same, once = tmp_path / "same.txt", tmp_path / "once.txt"
    same.write_text("a red fox in the snow\n" * 3000)
    once.write_text("a red fox in the snow\n")
    estimates = []
    for path in (same, once):
        code, out, err = run_plan(capsys, str(path), "--config", TINY, "--json")
        assert code == 0, err
        estimates.append(json.loads(out))
    assert (
        estimates[0]["prompts"] == 3000 and estimates[0]["distinct_captions"] == 2
    )  # the caption and "" (CFG)
    assert estimates[0]["store_bytes"] == estimates[1]["store_bytes"]
    code, out, _ = run_plan(capsys, str(same), "--config", TINY)
    assert "(2 distinct captions, mean" in out

    distinct = tmp_path / "distinct.txt"
    distinct.write_text("".join(f"a red fox number {n}\n" for n in range(3000)))
    code, out, _ = run_plan(capsys, str(distinct), "--config", TINY, "--json")
    data = json.loads(out)
    assert data["distinct_captions"] == 3001 and data["token_sample"] == estimate.TOKEN_SAMPLE
    per_caption = data["mean_tokens"] * estimates[0]["store_bytes"] / (2 * estimates[0]["mean_tokens"])
    assert data["store_bytes"] == pytest.approx(3001 * per_caption, rel=0.01)


def test_without_cleaning_the_captions_are_counted_exactly(tiny_model, tmp_path, capsys):
    """``model.clean_caption: false``: the caption is the prompt lowercased and stripped, so "A Cat" and
    "a cat" are one entry; per-line negative prompts count too."""
    config = tmp_path / "c.yaml"
    config.write_text(Path(TINY).read_text().replace("clean_caption: true", "clean_caption: false"))
    prompts = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "A Cat"},
        {"prompt": "a cat"},
        {"prompt": "a dog", "negative_prompt": "blurry"},
        {"prompt": "blurry"},
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, err = run_plan(capsys, str(prompts), "--config", str(config), "--json")
    assert code == 0, err
    assert json.loads(out)["distinct_captions"] == 4  # "a cat", "a dog", "blurry", ""
    code, out, _ = run_plan(capsys, str(prompts), "--config", TINY, "--json")
    assert json.loads(out)["distinct_captions"] == 5  # cleaning on: raw texts, an upper bound


def test_distinct_captions_in_bounded_memory():
    counter = estimate.DistinctCaptions(sample_size=10)
    for n in range(1000):
        counter.add(f"caption {n % 100}")
    assert counter.count() == 100
    sample = counter.sample()
    assert (
        len(sample) == 10 == len(set(sample)) and len(counter._kept) == 10
    )  # one entry per distinct caption
    again = estimate.DistinctCaptions(sample_size=10)
    for n in reversed(range(100)):
        again.add(f"caption {n}")
    assert again.sample() == sample  # the same sample whatever the order and the repeats


# -------------------------------------------------------------------- offline, per GPU kind, one number style

RECIPES = sorted(p for p in (ROOT / "configs").glob("*.yaml") if load_config(str(p)).model.path != "tiny")
"""The shipped recipes of published checkpoints (the tiny-model demos aside)."""


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No hub: HF_HUB_OFFLINE set, an empty hub cache, and any fetch recorded and refused."""
    import huggingface_hub

    calls = []

    def refuse(repo_id, **kwargs):
        calls.append(repo_id)
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline mode is enabled")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    return calls


def square_prompts(tmp_path, n=100) -> str:
    path = tmp_path / "square.txt"
    path.write_text("".join(f"a photo of a red fox, number {i}\n" for i in range(n)))
    return str(path)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_plans_offline(offline, tmp_path, capsys, recipe):
    from pixart_batch.checkpoint_facts import PUBLISHED

    config = load_config(str(recipe))
    code, out, err = run_plan(capsys, PROMPTS, "--config", str(recipe), "--json")
    assert code == 0, err
    data = json.loads(out)
    side = 8 * PUBLISHED[config.model.path]["sample_size"]
    assert any(
        bucket == f"{side}x{side}" for bucket in data["buckets_width_x_height"]
    )  # the checkpoint's class
    assert data["model_facts_from"].startswith("the shipped facts") and "HF_HUB_OFFLINE" in data["notes"][0]
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.json"))  # nothing downloaded


def test_offline_plan_in_a_fresh_process(tmp_path):
    """The real hub client with HF_HUB_OFFLINE=1 and an empty cache: 1024-class buckets, nothing fetched."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    config = str(ROOT / "configs" / "pixart-alpha-1024.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "pixart_batch", "plan", PROMPTS, "--config", config, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["buckets_width_x_height"]["1024x1024"] == 19 and "1216x832" in data["buckets_width_x_height"]
    assert not any((tmp_path / "hf").rglob("*.json"))


def test_the_cost_is_the_measured_seconds_times_the_price(offline, tmp_path, capsys):
    """1024² at 20 steps with CFG on an H200: within 10 % of 0.8485 s/image × $3.5/h; the H100 row is
    scaled."""
    config = str(ROOT / "configs" / "pixart-alpha-1024.yaml")
    code, out, err = run_plan(
        capsys, square_prompts(tmp_path), "--config", config, "--usd-per-gpu-hour", "3.5", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["buckets_width_x_height"] == {"1024x1024": 100}
    expected = estimate.MEASURED["h200"]["s_per_image"] * 3.5 / 3600 * 1000
    assert data["usd_per_1000_images"] == pytest.approx(expected, rel=0.10)
    per_gpu = data["per_gpu"]
    assert (
        set(per_gpu) == {"h100", "h200"}
        and per_gpu["h200"]["basis"] == "measured"
        and per_gpu["h100"]["basis"] == "scaled"
    )
    assert per_gpu["h200"]["usd_per_1000_images"] == data["usd_per_1000_images"]
    assert per_gpu["h100"]["usd_per_1000_images"] > per_gpu["h200"]["usd_per_1000_images"]

    code, out, err = run_plan(
        capsys, square_prompts(tmp_path), "--config", config, "--gpu", "h100", "--usd-per-gpu-hour", "3.5"
    )
    assert code == 0, err
    assert "h100  NVIDIA H100 SXM  scaled" in out and "h200  NVIDIA H200      measured" in out
    assert "(estimate.gpu)" in next(line for line in out.splitlines() if line.startswith("h100 "))
    assert "h100 (scaled): not measured" in out and "h200 (measured): benchmarks/RESULTS.md" in out
    assert "docs/design.md" not in out


def test_one_number_style(offline, tmp_path, capsys):
    assert [estimate.fixed(x) for x in (0.0007693, 5.866e-05, 12.3456, 1234.6, 0.0)] == [
        "0.0007693",
        "0.00005866",
        "12.35",
        "1,235",
        "0",
    ]
    assert estimate.fixed(0.0181, 3, 2) == "0.0181" and estimate.fixed(6.3222, 3, 2) == "6.32"
    code, out, err = run_plan(
        capsys,
        PROMPTS,
        "--config",
        str(ROOT / "configs" / "pixart-dmd-512.yaml"),
        "--usd-per-gpu-hour",
        "3.5",
    )
    assert code == 0, err
    import re

    assert not re.search(r"\de[-+]\d", out), out  # no exponent anywhere
    assert "at 1 step per GPU kind" in out


def test_tiny_with_a_gpu_recipe_says_so(tiny_model, capsys):
    config = str(ROOT / "configs" / "pixart-alpha-1024.yaml")
    code, out, err = run_plan(capsys, PROMPTS, "--config", config, "--model", "tiny")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("model: tiny")
    assert lines[1].startswith("note: this plans the tiny test model") and "this GPU recipe" in lines[1]


def test_the_hubs_configs_win_and_a_disagreement_is_noted(monkeypatch):
    from dataclasses import replace

    from pixart_batch.estimate import facts as estimate_facts
    from pixart_batch.spec import RunSpec

    config = load_config(str(ROOT / "configs" / "pixart-alpha-1024.yaml"))
    shipped = estimate.shipped_checkpoint_facts(config)
    assert shipped is not None and shipped.sample_size == 128
    monkeypatch.setattr(RunSpec, "build", classmethod(lambda cls, config, weights=True: None))
    monkeypatch.setattr(
        estimate_facts, "facts_of", lambda spec: replace(shipped, sample_size=64, source="hub")
    )
    facts = estimate.checkpoint_facts(config)
    assert facts.sample_size == 64 and len(facts.notes) == 1
    assert (
        "the hub's configs differ from the shipped facts (sample_size 128 → 64); the hub's are used"
        in facts.notes[0]
    )
    monkeypatch.setattr(estimate_facts, "facts_of", lambda spec: shipped)
    assert estimate.checkpoint_facts(config).notes == ()  # agreeing: nothing to say


def test_a_local_or_unknown_checkpoint_is_not_guessed(offline, tmp_path, capsys):
    code, _, err = run_plan(capsys, PROMPTS, "--model", "someone/unknown-model")
    assert code == 2 and err.count("\n") == 1 and "not found locally or on the hub" in err
