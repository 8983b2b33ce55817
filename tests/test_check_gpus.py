"""A run never asks for more GPUs than the cluster has without saying so up front."""

import pytest

from pixart_batch.config import load_config
from pixart_batch.errors import UserError
from pixart_batch.execution import ExecutionSpec
from pixart_batch.executors.ray import check_gpus


def test_phases_are_counted_against_cluster_gpus(monkeypatch):
    import ray

    gpus = {"GPU": 0.0}
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(gpus))
    one = ExecutionSpec.build(load_config("configs/one-gpu.yaml"))
    with pytest.raises(
        UserError, match=r"the encode stages need 1 GPUs at once \(encode 1×1\) but the Ray cluster has 0"
    ):
        check_gpus(one)
    gpus["GPU"] = 1.0
    check_gpus(one)  # T5 alone, then one DiT + VAE actor: fits one card
    eight = ExecutionSpec.build(load_config("configs/node-8gpu.yaml"))
    with pytest.raises(UserError, match=r"generate stages need 8 GPUs at once \(denoise 8×1\)"):
        check_gpus(eight)
    gpus["GPU"] = 8.0
    check_gpus(eight)
    # Autoscaling pools: their minimum fits one node.
    check_gpus(ExecutionSpec.build(load_config("configs/multi-node.yaml")))
    gpus["GPU"] = 0.0
    check_gpus(ExecutionSpec.build(load_config("configs/tiny.yaml")))


@pytest.mark.slow
@pytest.mark.parametrize("executor, needle", [("ray", "GPUs at once"), ("local", "ask for a GPU")])
def test_gpu_recipe_on_a_cpu_cluster_is_refused_before_any_work(
    ray_session, tiny_model, tmp_path, capsys, executor, needle
):
    from pixart_batch.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    capsys.readouterr()
    code = main(
        [
            "generate",
            "--config",
            "configs/one-gpu.yaml",
            "--model",
            "tiny",
            "--prompts",
            str(prompts),
            "--output",
            str(tmp_path / "out"),
            "--executor",
            executor,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not list((tmp_path / "out").rglob("*.parquet"))
