"""Shared fixtures: one tiny checkpoint and one local Ray instance per test session.

No hub access: ``PIXART_BATCH_CACHE`` points the tiny-checkpoint cache at a
session temporary directory, and HF_HUB_OFFLINE forbids downloads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("pixart_batch_cache")
    os.environ["PIXART_BATCH_CACHE"] = str(cache)
    yield cache


@pytest.fixture(scope="session")
def tiny_model(_cache_dir) -> Path:
    from pixart_batch.tiny import cached_tiny_checkpoint

    return cached_tiny_checkpoint(0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model):
    from diffusers import PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline.from_pretrained(tiny_model, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def tiny_config(**overrides):
    """The tiny recipe with dotted overrides (``{"generation.images_per_prompt": 2}``)."""
    from pixart_batch.config import load_config, with_overrides

    base = load_config(Path(__file__).parent.parent / "configs" / "tiny.yaml")
    return with_overrides(base, overrides)


def recipe_file(path: Path, overrides: dict) -> Path:
    """The tiny recipe with dotted overrides (``{"output.rows_per_shard": 2}``), written to ``path``
    for the CLI's ``--config``."""
    import yaml

    data = yaml.safe_load((Path(__file__).parent.parent / "configs" / "tiny.yaml").read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


def copy_prompts(name: str, directory: Path) -> Path:
    target = directory / name
    shutil.copy(DATA / "prompts" / name, target)
    return target


def dataset_images(output: Path) -> dict:
    """``{key: RGB pixels}`` of every committed image, read as a user would: ``datasets`` for Parquet
    shards, the ``webdataset`` package for tar shards (with each sample's .json and .txt checked).
    Fails on a duplicate key."""
    import numpy as np

    tars = sorted(str(p) for p in (output / "data").rglob("*.tar") if not p.name.startswith("."))
    if not tars:
        from datasets import load_dataset

        dataset = load_dataset("parquet", data_dir=str(output / "data"), split="train")
        keys = dataset["key"]
        assert len(keys) == len(set(keys)), "duplicate keys"
        return {row["key"]: np.asarray(row["image"].convert("RGB"), dtype=np.int16) for row in dataset}
    import webdataset

    images: dict = {}
    for sample in webdataset.WebDataset(tars, shardshuffle=False).decode("pil"):
        key = sample["__key__"]
        assert key not in images, f"duplicate key {key}"
        (image,) = [sample[ext] for ext in ("png", "jpg", "webp") if ext in sample]
        assert sample["json"]["key"] == key and sample["txt"] == sample["json"]["caption"]
        images[key] = np.asarray(image.convert("RGB"), dtype=np.int16)
    return images
