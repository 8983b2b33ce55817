"""The whole pipeline through local Ray on the tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import copy_prompts, tiny_config

from pixart_batch.prompts import read_prompts
from pixart_batch.run import run_generate

pytestmark = pytest.mark.slow


def load_rows(output):
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_dir=str(output / "data"), split="train")
    return dataset, {row["key"]: row for row in dataset}


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, ray_session, tiny_model):
    root = tmp_path_factory.mktemp("mixed")
    prompts = copy_prompts("mixed.txt", root)
    report = run_generate(tiny_config(**{"generation.images_per_prompt": 2}), str(prompts), str(root / "out"))
    return prompts, root / "out", report


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory, ray_session, tiny_model):
    root = tmp_path_factory.mktemp("jsonl")
    prompts = copy_prompts("with_ids.jsonl", root)
    report = run_generate(
        tiny_config(**{"generation.negative_prompt": "ugly"}), str(prompts), str(root / "out")
    )
    return prompts, root / "out", report


@pytest.mark.parametrize("which, per_prompt", [("mixed_run", 2), ("jsonl_run", 1)])
def test_every_prompt_times_k_rows_loadable_with_datasets(request, which, per_prompt, tiny_pipeline):
    from datasets import Image

    prompts, output, report = request.getfixturevalue(which)
    records = read_prompts(prompts)
    dataset, rows = load_rows(output)
    assert len(dataset) == len(rows) == len(records) * per_prompt
    assert isinstance(dataset.features["image"], Image)
    assert report["images_generated"] == len(dataset) and report["images_skipped"] == 0
    by_id = {r.prompt_id: r for r in records}
    for row in rows.values():
        record = by_id[row["prompt_id"]]
        assert row["key"] == f"{row['prompt_id']}-{row['image_index']:05d}" and "." not in row["key"]
        assert row["prompt"] == record.prompt and "--ar" not in row["prompt"] and "--hw" not in row["prompt"]
        assert row["caption"] == tiny_pipeline._text_preprocessing(record.prompt, clean_caption=True)[0]
        assert row["image"].size == (row["width"], row["height"])
        if record.width is not None:
            assert (row["width"], row["height"]) == (record.width, record.height)
        if record.aspect_ratio is not None:
            assert (row["width"], row["height"]) == (row["bucket_width"], row["bucket_height"])
        assert row["num_inference_steps"] == 20 and row["guidance_scale"] == pytest.approx(4.5)
        assert row["fast_mode"] == "exact"
        import hashlib

        assert row["sha256"] == hashlib.sha256(_image_bytes(output, row["key"])).hexdigest()
    card = (output / "README.md").read_text()
    assert card.startswith("---\n") and "dtype: image" in card
    saved = json.loads((output / "run_report.json").read_text())
    assert sum(saved["buckets"].values()) == len(dataset)
    assert {"clean", "encode", "generate"} <= set(saved["stage_seconds"])


def test_truncated_and_empty_captions_are_generated_and_counted(mixed_run):
    _, output, report = mixed_run
    _, rows = load_rows(output)
    truncated = [row for row in rows.values() if row["truncated"]]
    assert truncated and all(row["num_tokens"] == 120 for row in truncated)
    assert report["images_with_truncated_caption"] == len(truncated)
    empty = [
        row for row in rows.values() if row["caption"] == ""
    ]  # the CJK prompt: diffusers' cleaning drops it all
    assert empty and report["captions_empty"] == len({row["prompt_id"] for row in empty})
    assert all(row["num_tokens"] == 1 for row in empty)  # just </s>, as diffusers encodes ""


def _image_bytes(output, key):
    import pyarrow.parquet as pq

    for path in (output / "data").rglob("*.parquet"):
        table = pq.read_table(path, columns=["key", "image"]).to_pylist()
        for row in table:
            if row["key"] == key:
                return row["image"]["bytes"]
    raise KeyError(key)


def test_jsonl_negative_prompts_and_ids(jsonl_run):
    _, output, _ = jsonl_run
    _, rows = load_rows(output)
    assert rows["cat-01-00000"]["negative_prompt"] == "blurry, low quality"
    assert rows["dog_02-00000"]["negative_prompt"] == "ugly"  # the config default
    assert rows["3-00000"]["negative_prompt"] == ""  # given explicitly


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("which", ["mixed_run", "jsonl_run"])
def test_rows_reproduce_with_plain_diffusers(request, which, tiny_pipeline):
    """Contract 1: the row's own fields reproduce its pixels with PixArtAlphaPipeline."""
    _, output, _ = request.getfixturevalue(which)
    _, rows = load_rows(output)
    checked = resized = 0
    for row in sorted(rows.values(), key=lambda r: r["key"])[:12]:
        generator = torch.Generator("cpu").manual_seed(row["seed"])
        common = dict(
            negative_prompt=row["negative_prompt"],
            generator=generator,
            num_inference_steps=row["num_inference_steps"],
            guidance_scale=row["guidance_scale"],
            output_type="pil",
        )
        if (row["height"], row["width"]) == (row["bucket_height"], row["bucket_width"]):
            image = tiny_pipeline(
                row["prompt"],
                height=row["bucket_height"],
                width=row["bucket_width"],
                use_resolution_binning=False,
                **common,
            ).images[0]
            checked += 1
        else:  # diffusers' own resolution binning maps the requested size to the same bucket and resizes back
            image = tiny_pipeline(
                row["prompt"], height=row["height"], width=row["width"], use_resolution_binning=True, **common
            ).images[0]
            resized += 1
        delta = np.abs(_pixels(image) - _pixels(row["image"])).max()
        assert delta <= 2, (row["key"], delta)
    assert checked >= 3


def test_batch_size_does_not_change_images(tmp_path, mixed_run, ray_session):
    prompts, output_8, _ = mixed_run
    run_generate(
        tiny_config(
            **{
                "generation.images_per_prompt": 2,
                "stages.denoise.batch_size": 1,
                "stages.decode.batch_size": 1,
            }
        ),
        str(prompts),
        str(tmp_path / "b1"),
    )
    _, rows_8 = load_rows(output_8)
    _, rows_1 = load_rows(tmp_path / "b1")
    assert rows_1.keys() == rows_8.keys()
    for key in rows_8:
        assert rows_1[key]["seed"] == rows_8[key]["seed"]
        assert np.abs(_pixels(rows_1[key]["image"]) - _pixels(rows_8[key]["image"])).max() <= 1, key
