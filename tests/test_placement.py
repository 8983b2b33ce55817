"""GPU placement on Ray's logical GPUs (a CPU machine): every DiT+VAE actor gets a card of its own,
for 1, 2 and 8 cards and for fixed and growing pools."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import tiny_config

from pixart_batch.config import ConfigError
from pixart_batch.execution import ExecutionSpec
from pixart_batch.executors.ray import check_gpus, model_pools

PROBE = Path(__file__).with_name("placement_probe.py")


@pytest.mark.slow
@pytest.mark.parametrize("cards", [1, 2, 8])
def test_every_actor_gets_a_whole_card(cards):
    done = subprocess.run(
        [sys.executable, str(PROBE), str(cards)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {r["layout"] for r in results} == {"fixed", "growing"}
    for result in results:
        assert len(result["served"]) == cards * 8  # every batch was served: no actor waited forever
        gpus_of: dict[int, set[str]] = defaultdict(set)
        for pid, gpus in result["served"] + result["started"]:
            gpus_of[pid].add(gpus)
        for pid, gpus in gpus_of.items():
            assert len(gpus) == 1 and len(next(iter(gpus)).split(",")) == 1, (
                pid,
                gpus,
            )  # one whole card, always the same
        cards_used = [next(iter(g)) for g in gpus_of.values()]
        assert len(cards_used) == len(set(cards_used)), result  # no card shared by two actors
        if result["layout"] == "fixed":
            assert len(gpus_of) == cards, result  # all of them started
            assert {pid for pid, _ in result["served"]} <= {pid for pid, _ in result["started"]}


def test_colocated_pool_takes_the_denoise_resources_and_two_batches_per_gpu_actor():
    config = tiny_config(
        **{"stages.denoise.num_gpus": 1.0, "stages.denoise.concurrency": 8, "stages.decode.colocate": True}
    )
    [(name, reports, kwargs)] = model_pools(ExecutionSpec.build(config))
    assert name == "generate" and reports and kwargs["num_gpus"] == 1.0 and kwargs["max_concurrency"] == 2
    separate = model_pools(ExecutionSpec.build(tiny_config()))
    assert [name for name, _, _ in separate] == ["denoise", "decode"]
    assert all("max_concurrency" not in kwargs for _, _, kwargs in separate)


def test_colocate_with_its_own_gpus_is_refused():
    with pytest.raises(ConfigError, match="stages.decode.colocate: the VAE runs inside the DiT actors"):
        tiny_config(**{"stages.decode.colocate": True, "stages.decode.num_gpus": 0.4})


def test_check_gpus_counts_a_colocated_pool_once(monkeypatch):
    import pixart_batch.executors.ray as pipeline

    monkeypatch.setattr(pipeline.ray, "cluster_resources", lambda: {"GPU": 8.0})
    check_gpus(
        ExecutionSpec.build(
            tiny_config(
                **{
                    "stages.denoise.num_gpus": 1.0,
                    "stages.denoise.concurrency": 8,
                    "stages.decode.colocate": True,
                }
            )
        )
    )
    with pytest.raises(Exception, match="need 12 GPUs"):
        check_gpus(
            ExecutionSpec.build(
                tiny_config(
                    **{
                        "stages.denoise.num_gpus": 1.0,
                        "stages.denoise.concurrency": 8,
                        "stages.decode.num_gpus": 0.5,
                        "stages.decode.concurrency": 8,
                    }
                )
            )
        )


def test_colocated_actor_overlaps_vae_and_dit_but_never_shares_a_model(monkeypatch):
    """Two batches at once (Ray's max_concurrency 2): the VAE of one runs while the DiT of the other
    does, and neither model is ever used by two threads at once."""
    import threading
    from types import SimpleNamespace
    from typing import cast

    import numpy as np

    from pixart_batch.spec import DecodeSpec, DenoiseSpec
    from pixart_batch.stages import generate
    from pixart_batch.stages.generate import DenoiseDecode

    busy = {"dit": 0, "vae": 0}
    guard = threading.Lock()
    second_dit_started, first_vae_waited = threading.Event(), threading.Event()
    calls = {"dit": 0, "vae": 0}

    def model(name: str, column: str):
        def run(batch):
            with guard:
                busy[name] += 1
                assert busy[name] == 1, f"{name} used by two threads at once"
                calls[name] += 1
                first = calls[name] == 1
            if name == "dit" and not first:
                second_dit_started.set()
            if name == "vae" and first:
                # The first batch's VAE blocks until the second batch's DiT has started: they overlap,
                # or this times out (a DiT waiting on the VAE's lock never starts).
                first_vae_waited.set()
                assert second_dit_started.wait(timeout=30), (
                    "the second DiT call never started while the first VAE ran"
                )
            with guard:
                busy[name] -= 1
            return {**batch, column: batch["key"]}

        return run

    # Built by its own __init__, with stand-in models for the DiT and the VAE (on the CPU: no stream).
    monkeypatch.setattr(generate, "Denoiser", lambda spec: model("dit", "latents"))
    monkeypatch.setattr(generate, "Decoder", lambda spec: model("vae", "pixels"))
    cpu = SimpleNamespace(device="cpu")
    actor = DenoiseDecode(cast(DenoiseSpec, cpu), cast(DecodeSpec, cpu), decode_batch_size=2)
    batches = [{"key": np.array([f"b{n}-{i}" for i in range(3)], dtype=object)} for n in range(2)]
    results: list = [None, None]
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            results[n] = actor(batches[n])
        except BaseException as exc:  # noqa: B036 - re-raised in the test's thread below
            errors.append(exc)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert first_vae_waited.wait(timeout=30), "the first batch never reached its VAE"
    second = threading.Thread(target=call, args=(1,))
    second.start()
    for thread in (first, second):
        thread.join(timeout=60)
        assert not thread.is_alive()
    if errors:
        raise errors[0]
    for n in range(2):
        assert results[n]["pixels"].tolist() == batches[n]["key"].tolist()  # decoded in chunks of 2, in order
    assert second_dit_started.is_set()  # the second DiT call started before the first VAE call ended
