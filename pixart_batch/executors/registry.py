"""The executors by name (data only, so the config can list them without importing one)."""

from __future__ import annotations

EXECUTORS = {
    "ray": "pixart_batch.executors.ray:RayExecutor",
    "local": "pixart_batch.executors.local:LocalExecutor",
}
"""``ray.executor`` → where its class is (imported only when chosen: the Ray one imports Ray)."""

AUTO = "auto"
"""``ray.executor: auto``: in-process for a small run that joins no cluster, else Ray."""
