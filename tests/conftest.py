"""Shared fixtures: one tiny checkpoint and one local Ray instance per test session.

No hub access: ``PIXART_BATCH_CACHE`` points the tiny-checkpoint cache at a
session temporary directory, and HF_HUB_OFFLINE forbids downloads.

``-m "not slow"`` starts no Ray: a test not marked ``slow`` fails if it asks for ``ray_session``,
calls ``ray.init`` or leaves Ray initialised, or runs a pipeline (in this process or a CLI
subprocess) that would start Ray: ``PIXART_BATCH_FORBID_RAY`` makes ``init_ray`` refuse.
"""

from __future__ import annotations

import os
import sys
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


FORBID_RAY = "PIXART_BATCH_FORBID_RAY"
"""Set for tests not marked slow; ``pixart_batch.executors.ray.init_ray`` refuses to start Ray under it."""


def _starts_ray(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture: a test not marked slow may not ask for the session's Ray."""
    if not _starts_ray(item) and "ray_session" in getattr(item, "fixturenames", ()):
        pytest.fail(f"{item.nodeid} uses ray_session (starts Ray) but is not marked slow", pytrace=False)


def _refuse_ray_init(*args, **kwargs):
    raise RuntimeError("this test starts Ray (ray.init) but is not marked slow: mark it @pytest.mark.slow")


@pytest.fixture(autouse=True)
def _no_ray_unless_slow(request, monkeypatch):
    """Tests not marked slow start no Ray (see the module docstring)."""
    if _starts_ray(request.node):
        yield
        return
    monkeypatch.setenv(FORBID_RAY, "1")  # init_ray refuses, here and in CLI subprocesses (they inherit it)
    ray = sys.modules.get("ray")  # never imported just for this check
    before = ray is not None and ray.is_initialized()
    if ray is not None:
        monkeypatch.setattr(ray, "init", _refuse_ray_init)
    yield
    ray = sys.modules.get("ray")
    if ray is not None and not before and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} started Ray but is not marked slow", pytrace=False)


@pytest.fixture
def existing_output(tmp_path):
    """An output directory with content that must survive every refused run or call
    (``test_bad_input``, ``test_api``)."""
    output = tmp_path / "out"
    (output / "data").mkdir(parents=True)
    (output / "data" / "train-keep.parquet").write_bytes(b"PAR1 committed shard PAR1")
    (output / "README.md").write_text("card")
    return output
