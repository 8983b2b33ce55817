"""The executors: a new one is one module here and one line in :data:`.registry.EXECUTORS`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .registry import AUTO, EXECUTORS

if TYPE_CHECKING:
    from ..execution import ExecutionSpec
    from .base import Executor


def choose_executor(execution: ExecutionSpec, planned_images: int) -> str:
    """``ray.executor``, with ``auto`` resolved: in-process for a small run that joins no cluster."""
    if execution.executor != AUTO:
        return execution.executor
    if execution.ray.address or os.environ.get("RAY_ADDRESS"):
        return "ray"
    return "local" if planned_images <= execution.local_max_images else "ray"


def make_executor(name: str, execution: ExecutionSpec) -> Executor:
    """The executor ``name`` (a key of :data:`EXECUTORS`) for a run, built from its execution spec alone."""
    if name not in EXECUTORS:
        raise KeyError(f"unknown executor {name!r}; the executors are {', '.join(EXECUTORS)}")
    executor: Executor = EXECUTORS.load(name)(execution)
    return executor


__all__ = ["AUTO", "EXECUTORS", "choose_executor", "make_executor"]
