"""Run with ``python tests/placement_probe.py K``: a local Ray with K logical GPUs, the generate
phase's actor pools exactly as the pipeline builds them (``pipeline.model_pools``) for a GPU
recipe, and a stand-in stage that reports which process and which GPUs served each batch.
Prints one JSON line per pool layout.

Each actor records its process and cards when it is built (``started``), so a fast run in which
one actor serves no batch still shows that it started and which card it holds; with a fixed pool
every batch waits until all actors have started, so none can be shut down half-built."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, os.path.dirname(__file__))
from helpers import tiny_config  # noqa: E402

from pixart_batch.execution import ExecutionSpec  # noqa: E402
from pixart_batch.executors.ray import model_pools  # noqa: E402


class Probe:
    def __init__(self, started: str = "", wait_for: int = 0, **_: object) -> None:
        self.started, self.wait_for = Path(started), wait_for
        gpus = ",".join(str(g) for g in ray.get_gpu_ids())
        (self.started / f"{os.getpid()}.json").write_text(json.dumps([os.getpid(), gpus]))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        deadline = time.monotonic() + 300
        while len(list(self.started.glob("*.json"))) < self.wait_for and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.05)
        rows = len(batch["id"])
        batch["pid"] = np.full(rows, os.getpid())
        batch["gpus"] = np.array([",".join(str(g) for g in ray.get_gpu_ids())] * rows, dtype=object)
        return batch


def main(cards: int) -> None:
    ray.init(
        address="local", num_cpus=2 * cards + 2, num_gpus=cards, include_dashboard=False, log_to_driver=False
    )
    layouts = {"fixed": cards, "growing": [1, cards]}
    for name, concurrency in layouts.items():
        config = tiny_config(
            **{
                "stages.denoise.num_gpus": 1.0,
                "stages.denoise.num_cpus": 1,
                "stages.denoise.concurrency": concurrency,
                "stages.denoise.batch_size": 1,
                "stages.decode.colocate": True,
            }
        )
        started = tempfile.mkdtemp(prefix="placement-")
        wait_for = cards if name == "fixed" else 0
        dataset = ray.data.range(cards * 8, override_num_blocks=cards * 8)
        for _, _, kwargs in model_pools(ExecutionSpec.build(config)):
            constructor = {
                **kwargs.get("fn_constructor_kwargs", {}),
                "started": started,
                "wait_for": wait_for,
            }
            dataset = dataset.map_batches(Probe, **{**kwargs, "fn_constructor_kwargs": constructor})
        rows = dataset.take_all()
        built = [json.loads(path.read_text()) for path in Path(started).glob("*.json")]
        served = [[int(r["pid"]), r["gpus"]] for r in rows]
        print(json.dumps({"layout": name, "cards": cards, "served": served, "started": built}), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
