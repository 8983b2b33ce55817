"""Fault injection for the failure tests (inert unless the environment variables are set).

``PIXART_BATCH_FAULTS=stage:key[,...]``   stage ``stage`` raises for image ``key``;
``PIXART_BATCH_SLOW=point:seconds[,...]`` sleep at ``point`` (``encode``, ``denoise``,
``decode`` per batch; ``shard-commit`` between writing a shard's temporary file and
renaming it), so a test can kill the run at a known moment;
``PIXART_BATCH_FULL=prefix[,...]``       writing a file whose name starts with ``prefix``
fails half-way with ENOSPC (a disk that fills up);
``PIXART_BATCH_FAULTS=denoise-batch:N``  the DiT stage raises for any group of more than N
images (an out-of-memory batch); ``denoise:*`` raises for every image (a broken model).
"""

from __future__ import annotations

import os
import time

FAULTS_ENV = "PIXART_BATCH_FAULTS"
SLOW_ENV = "PIXART_BATCH_SLOW"


def _entries(variable: str) -> list[tuple[str, str]]:
    return [tuple(item.split(":", 1)) for item in os.environ.get(variable, "").split(",") if ":" in item]  # type: ignore[misc]


FULL_ENV = "PIXART_BATCH_FULL"


def raise_if_injected(stage: str, keys: list[str]) -> None:
    for fault_stage, fault_key in _entries(FAULTS_ENV):
        if fault_stage == stage and (fault_key in keys or fault_key == "*"):
            raise RuntimeError(f"injected fault in {stage} for {fault_key if fault_key != '*' else keys[0]}")
        if fault_stage == f"{stage}-batch" and len(keys) > int(fault_key):
            raise RuntimeError(f"injected out of memory: {stage} batch of {len(keys)} images (> {fault_key})")


def inject_full_disk(name: str) -> None:
    import errno

    prefixes = [p for p in os.environ.get(FULL_ENV, "").split(",") if p]
    if any(name.startswith(prefix) for prefix in prefixes):
        raise OSError(errno.ENOSPC, f"No space left on device (injected) writing {name}")


def stall(point: str) -> None:
    for name, seconds in _entries(SLOW_ENV):
        if name == point:
            time.sleep(float(seconds))
