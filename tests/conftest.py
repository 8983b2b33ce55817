"""Shared fixtures: one tiny checkpoint and one local Ray instance per test session.

No hub access: ``PIXART_BATCH_CACHE`` points the tiny-checkpoint cache at a
session temporary directory, and HF_HUB_OFFLINE forbids downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


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
