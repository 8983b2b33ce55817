"""PixArt-Σ and PixArt-LCM checkpoints through the whole pipeline (local Ray), against plain diffusers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import recipe_file, tiny_config
from runner import kill_tree, run_cli, start_cli, wait_for

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
    "a lighthouse in the rain",
]


def _rows(output: Path) -> list[dict]:
    from datasets import load_dataset

    return list(load_dataset("parquet", data_dir=str(output / "data"), split="train"))


def _reproduce(pipeline_class: str, model: Path, row: dict, **extra) -> np.ndarray:
    import diffusers

    pipe = getattr(diffusers, pipeline_class).from_pretrained(model, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        row["prompt"],
        negative_prompt=row["negative_prompt"],
        generator=torch.Generator("cpu").manual_seed(row["seed"]),
        num_inference_steps=row["num_inference_steps"],
        guidance_scale=row["guidance_scale"],
        height=row["bucket_height"],
        width=row["bucket_width"],
        use_resolution_binning=False,
        **extra,
    ).images[0]
    return np.asarray(image, dtype=np.int16)


def _check_rows_reproduce(rows, pipeline_class, model, limit=4, **extra):
    checked = 0
    for row in sorted(rows, key=lambda r: r["key"]):
        if (row["height"], row["width"]) != (row["bucket_height"], row["bucket_width"]):
            continue
        delta = np.abs(
            _reproduce(pipeline_class, model, row, **extra)
            - np.asarray(row["image"].convert("RGB"), dtype=np.int16)
        ).max()
        assert delta <= 2, (row["key"], delta)
        checked += 1
        if checked == limit:
            break
    assert checked >= 2


def test_lcm_checkpoint_end_to_end(tmp_path, ray_session):
    """A checkpoint that ships LCMScheduler: rows say LCMScheduler, 4 steps and guidance 0 (no CFG, so no
    negative prompt is encoded), and plain diffusers loading the same checkpoint reproduces them."""
    from pixart_batch.tiny import cached_tiny_checkpoint

    model = cached_tiny_checkpoint(0, scheduler="lcm")
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = tiny_config(
        **{"model.path": str(model), "generation.num_inference_steps": 4, "generation.guidance_scale": 0.0}
    )
    report = run_generate(config, str(prompts), str(tmp_path / "out"))
    assert report["images_generated"] == len(PROMPTS)
    assert report["embeddings_encoded"] == len(
        PROMPTS
    )  # the captions only: no negative branch, no negative embedding
    rows = _rows(tmp_path / "out")
    assert {(r["scheduler"], r["num_inference_steps"], r["guidance_scale"]) for r in rows} == {
        ("LCMScheduler", 4, 0.0)
    }
    _check_rows_reproduce(rows, "PixArtAlphaPipeline", model)


def test_sigma_checkpoint_end_to_end_with_sigkill_and_resume(tmp_path):
    """A PixArtSigmaPipeline checkpoint: killed mid-run and resumed, every key exactly once, rows reproduce
    with PixArtSigmaPipeline, and its embeddings (300 tokens) live apart from α's in a shared store."""
    from pixart_batch.tiny import cached_tiny_checkpoint

    model = cached_tiny_checkpoint(0, family="sigma")
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    overrides: dict[str, object] = {"model.path": str(model), "output.store": str(tmp_path / "shared-store")}
    overrides |= {f"output.{name}": 2 for name in ("rows_per_shard", "row_group_size", "store_rows_per_part")}
    overrides |= {f"stages.{stage}.batch_size": 2 for stage in ("encode", "denoise", "decode", "write")}
    config = recipe_file(tmp_path / "sigma.yaml", overrides)
    output, log = tmp_path / "out", tmp_path / "run.log"
    command = ["generate", "--config", str(config), "--prompts", str(prompts), "--output", str(output)]

    run = start_cli(command, log, PIXART_BATCH_SLOW="denoise:0.7")
    wait_for(lambda: any((output / "data").rglob("train-*.parquet")), run, log)
    kill_tree(run)
    before = len(_rows(output))
    assert 0 < before < len(PROMPTS)
    assert run_cli(command, log) == 0, log.read_text()[-3000:]
    rows = _rows(output)
    assert sorted(r["key"] for r in rows) == sorted({r["key"] for r in rows}) and len(rows) == len(PROMPTS)
    assert {r["max_sequence_length"] for r in rows} == {300}
    assert run_cli(["verify", str(output)], log) == 0, log.read_text()[-2000:]
    _check_rows_reproduce(rows, "PixArtSigmaPipeline", model, max_sequence_length=300)

    # The α tiny checkpoint writing into the same store gets its own store key (different encoder settings).
    config = recipe_file(config, {**overrides, "model.path": "tiny"})
    assert (
        run_cli(
            [
                "encode",
                "--config",
                str(config),
                "--prompts",
                str(prompts),
                "--output",
                str(tmp_path / "alpha"),
            ],
            log,
        )
        == 0
    )
    assert len([p for p in (tmp_path / "shared-store").iterdir() if p.is_dir()]) == 2
