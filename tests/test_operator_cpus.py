"""Every Ray Data operator of a run asks the CPUs its config gives it, and a run whose phases the cluster's
CPUs cannot hold at once is refused in one line before anything is written (issue 22: a re-submission on
a 1-CPU head hung 300 s on a repartition asking Ray Data's default of a whole CPU).

The arithmetic (``executors/ray_resources.py``) is tested without Ray; the slow tests record the physical
operators of every Ray Data execution of a real run and hold the arithmetic to them."""

from __future__ import annotations

import time

import pytest
from helpers import tiny_config

from pixart_batch.errors import UserError
from pixart_batch.execution import ExecutionSpec
from pixart_batch.executors.base import PolledCounter
from pixart_batch.executors.ray_resources import WHOLE_CPU, require_cpus, steps

# Distinct values, so the slow test can tell whose number each operator asks.
CPUS = {"ray.task_num_cpus": 0.15, "stages.clean.num_cpus": 0.2, "stages.write.num_cpus": 0.3}


def test_an_execution_with_actor_pools_needs_their_minimum_and_one_task_of_each_operator():
    needs = {
        (step.phase, bool(step.pools)): step.need for step in steps(ExecutionSpec.build(tiny_config(**CPUS)))
    }
    assert needs[("encode", True)] == pytest.approx(0.5 + 0.15 + 0.15)  # T5 pool; repartition, store write
    # DiT and VAE pools; repartition, embeddings, image encoding and write
    assert needs[("generate", True)] == pytest.approx(0.5 + 0.5 + 0.15 + 0.2 + 0.3)
    # No actor pool: nothing holds CPUs between tasks, the largest task (Ray's whole-CPU shuffles) is enough.
    assert {phase: need for (phase, pools), need in needs.items() if not pools} == {
        "clean": WHOLE_CPU,
        "encode": WHOLE_CPU,
        "plan": WHOLE_CPU,
    }
    pools = {
        "stages.denoise.concurrency": [2, 4],
        "stages.score.enabled": True,
        "stages.score.num_cpus": 0.4,
    }
    grown = tiny_config(**pools)
    generate = [step for step in steps(ExecutionSpec.build(grown)) if step.phase == "generate"][0]
    assert [name for name, _, _ in generate.pools] == ["denoise", "decode", "score"]
    assert generate.need == pytest.approx(2 * 0.5 + 0.5 + 0.4 + 0.25 * 3)  # a growing pool: its minimum
    colocated = tiny_config(**{"stages.decode.colocate": True, "stages.denoise.concurrency": 3})
    generate = [step for step in steps(ExecutionSpec.build(colocated)) if step.phase == "generate"][0]
    assert [pool[:2] for pool in generate.pools] == [("generate", 3)]


def test_a_cluster_too_small_for_a_phase_is_refused_in_one_line():
    config = tiny_config(**CPUS)
    require_cpus(ExecutionSpec.build(config), 1.65)
    with pytest.raises(UserError) as refused:
        require_cpus(ExecutionSpec.build(config), 1.5)
    message = str(refused.value)
    assert message == (
        "the generate phase needs 1.65 CPUs at once (denoise 1×0.5 + decode 1×0.5 + one task each: "
        "repartition 0.15, embeddings 0.2, image encoding and write 0.3) but the Ray cluster has 1.5; "
        "lower stages.*.num_cpus, stages.*.concurrency or ray.task_num_cpus, or add CPUs"
    )
    whole = r"^the clean phase needs 1 CPUs at once \(its largest task: file listing 1\) .* 0.5; add CPUs$"
    with pytest.raises(UserError, match=whole):
        # Ray 2.60 fixes a read's file listing at a whole CPU: nothing to lower.
        require_cpus(ExecutionSpec.build(config), 0.5)
    with pytest.raises(UserError, match=r"^the encode phase needs 2\.3 CPUs at once \(encode 4×0\.5 "):
        require_cpus(ExecutionSpec.build(tiny_config(**CPUS, **{"stages.encode.concurrency": 4})), 2)


def test_a_restarted_counter_takes_back_the_counts_its_poller_saw():
    counter = PolledCounter(max_consecutive=3, max_rate=0.5, rate_after=100)
    counter.record(4, ["boom p0123456789abcdef"])
    seen = counter.poll(None)
    assert seen == (4, 1, 0, {"boom <key>": 1})
    restarted = PolledCounter(max_consecutive=3, max_rate=0.5, rate_after=100)
    assert restarted.record(0, ["boom p0123456789abcdef", "boom p0123456789abcdee"]) is None
    assert restarted.poll(seen) == (4, 3, 2, {"boom <key>": 3})  # the driver's counts added once
    assert restarted.poll(seen) == (4, 3, 2, {"boom <key>": 3})
    assert restarted.record(0, ["boom p0123456789abcded"]) is not None  # 3 in a row, across the restart


# --------------------------------------------------------------------------- with Ray


def _asks(dag) -> list[tuple[str, str, float]]:
    """``(kind, name, CPUs)`` of every operator of a physical plan: one task's, or an actor pool's minimum."""
    found = []

    def walk(op) -> None:
        for upstream in op.input_dependencies:
            walk(upstream)
        kind = type(op).__name__
        if kind == "ActorPoolMapOperator":
            cpus = op.min_max_resource_requirements()[0].cpu
        else:
            cpus = op.incremental_resource_usage().cpu
        if kind != "InputDataBuffer":
            found.append((kind, op.name, float(cpus)))

    walk(dag)
    return found


@pytest.fixture
def executions(monkeypatch):
    """The operators of every Ray Data execution this test starts in this process."""
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    recorded: list[list[tuple[str, str, float]]] = []
    execute = StreamingExecutor.execute

    def recording(self, dag, *args, **kwargs):
        recorded.append(_asks(dag))
        return execute(self, dag, *args, **kwargs)

    monkeypatch.setattr(StreamingExecutor, "execute", recording)
    return recorded


def _generate(tmp_path, overrides: dict, prompts: int = 6) -> tuple[int, float, str]:
    from helpers import recipe_file

    from pixart_batch.cli import main

    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"a small red house number {i}\n" for i in range(prompts)))
    config = recipe_file(tmp_path / "recipe.yaml", {"generation.num_inference_steps": 2, **overrides})
    output = tmp_path / "out"
    started = time.monotonic()
    args = ["generate", "--config", str(config), "--prompts", str(path), "--output", str(output)]
    code = main([*args, "--executor", "ray"])
    return code, time.monotonic() - started, str(output)


@pytest.mark.slow
def test_every_operator_asks_what_the_config_gives_it(ray_session, tiny_model, tmp_path, executions):
    code, _, _ = _generate(tmp_path, CPUS)
    assert code == 0
    pooled = [ops for ops in executions if any(kind == "ActorPoolMapOperator" for kind, _, _ in ops)]
    assert len(pooled) == 2, executions  # encode, generate
    for ops in executions:
        for kind, name, cpus in ops:
            # Ray 2.60's fixed whole CPU (file listing, shuffles, Dataset.sum's projection): not beside actors
            allowed = {*CPUS.values(), 0.0} | ({WHOLE_CPU} if ops not in pooled else set())
            assert kind == "ActorPoolMapOperator" or cpus in allowed, (name, cpus, ops)
            ours = ("ReadFiles", "StreamingRepartition", "Write", "JoinShuffleReduce", "MapBatches")
            configured = kind == "ActorPoolMapOperator" or not name.startswith(ours) or cpus in CPUS.values()
            assert configured, (name, ops)
    model = {step.phase: step.need for step in steps(ExecutionSpec.build(tiny_config(**CPUS))) if step.pools}
    for ops, phase in zip(pooled, ("encode", "generate"), strict=True):
        assert all(cpus < WHOLE_CPU for _, _, cpus in ops), ops  # no whole-CPU task beside an actor pool
        assert sum(cpus for _, _, cpus in ops) <= model[phase] + 1e-9, (phase, ops)
        assert any(name.startswith("StreamingRepartition") and cpus == 0.15 for _, name, cpus in ops), ops


@pytest.mark.slow
def test_a_run_the_cluster_cannot_hold_is_refused_in_one_line_at_once(
    ray_session,
    tiny_model,
    tmp_path,
    capsys,
):
    # The session's Ray has 4 CPUs; 3 DiT + 3 VAE actors of 0.5 and the three task operators need 3.75.
    overrides = {"stages.denoise.concurrency": 3, "stages.decode.concurrency": 3}
    capsys.readouterr()
    code, seconds, output = _generate(tmp_path, {**overrides, "stages.decode.num_cpus": 0.75})
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "the generate phase needs 4.5 CPUs at once (denoise 3×0.5 + decode 3×0.75 + one task" in err, err
    assert "but the Ray cluster has 4;" in err and seconds < 30, (err, seconds)
    written = sorted((tmp_path / "out").rglob("*")) if (tmp_path / "out").exists() else []
    assert written == [], written
