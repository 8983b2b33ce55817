"""The executors: a new one is one module here and one line in :data:`.registry.EXECUTORS`."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from .registry import AUTO, EXECUTORS

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..spec import RunSpec
    from .base import Executor


def choose_executor(config: RunConfig, planned_images: int) -> str:
    """``ray.executor``, with ``auto`` resolved: in-process for a small run that joins no cluster."""
    if config.ray.executor != AUTO:
        return config.ray.executor
    if config.ray.address or os.environ.get("RAY_ADDRESS"):
        return "ray"
    return "local" if planned_images <= config.ray.local_max_images else "ray"


def make_executor(name: str, config: RunConfig, spec: RunSpec) -> Executor:
    """The executor ``name`` (a key of :data:`EXECUTORS`) for a run."""
    if name not in EXECUTORS:
        raise KeyError(f"unknown executor {name!r}; the executors are {', '.join(EXECUTORS)}")
    module, cls = EXECUTORS[name].split(":")
    executor: Executor = getattr(importlib.import_module(module), cls)(config, spec)
    return executor


__all__ = ["AUTO", "EXECUTORS", "choose_executor", "make_executor"]
