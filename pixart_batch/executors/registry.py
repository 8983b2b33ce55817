"""The executors by name (lazy entries, so the config can list them without importing one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .base import Executor

EXECUTORS: Registry[type[Executor]] = Registry(
    "executor",
    {
        "ray": "pixart_batch.executors.ray:RayExecutor",
        "local": "pixart_batch.executors.local:LocalExecutor",
    },
)
"""``ray.executor`` → its class (imported only when chosen: the Ray one imports Ray)."""

AUTO = "auto"
"""``ray.executor: auto``: in-process for a small run that joins no cluster, else Ray."""
