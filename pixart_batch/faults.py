"""Fault injection for the failure tests (inert unless the environment variables are set).

``PIXART_BATCH_FAULTS=stage:key[,...]``   stage ``stage`` raises for image ``key``;
``PIXART_BATCH_SLOW=point:seconds[,...]`` sleep at ``point`` (``encode``, ``denoise``,
``decode`` per batch; ``shard-commit`` between writing a shard's temporary file and
renaming it), so a test can kill the run at a known moment.
"""

from __future__ import annotations

import os
import time

FAULTS_ENV = "PIXART_BATCH_FAULTS"
SLOW_ENV = "PIXART_BATCH_SLOW"


def _entries(variable: str) -> list[tuple[str, str]]:
    return [tuple(item.split(":", 1)) for item in os.environ.get(variable, "").split(",") if ":" in item]  # type: ignore[misc]


def raise_if_injected(stage: str, keys: list[str]) -> None:
    for fault_stage, fault_key in _entries(FAULTS_ENV):
        if fault_stage == stage and fault_key in keys:
            raise RuntimeError(f"injected fault in {stage} for {fault_key}")


def stall(point: str) -> None:
    for name, seconds in _entries(SLOW_ENV):
        if name == point:
            time.sleep(float(seconds))
