"""The CPUs each phase of a Ray run asks of the cluster at once, and the check that they fit (Ray-free).

Ray Data runs a phase as one or more executions (a ``materialize``, a ``write_datasink``); the operators
of one execution run at the same time. An actor pool holds its minimum actors' CPUs for the whole
execution; a task operator holds one task's CPUs while a task runs. So an execution with actor pools
needs the pools' minimum CPUs plus one task of each of its task operators: with less, Ray Data may lend
what the actors leave to some operators while another never gets a task started (the 300 s
``ExecutionTimeoutError`` of a small cluster). An execution without actor pools holds nothing between
tasks: its largest task is enough.

Every task operator's CPUs come from the config: ``ray.task_num_cpus`` for Ray Data's own operators
(reads, repartitions, de-duplication, join reduces, the store and plan writes), ``stages.clean.num_cpus``
for the CPU batch functions, ``stages.write.num_cpus`` for the image encoding and writes. The exceptions
are fixed by Ray 2.60 at a whole CPU and cannot be set: a read's file listing task and the shuffles'
tasks (the sorts, the group-by and the joins' map tasks, the sort and group-by reduces, ``Dataset.sum``).
The executor runs them only in executions with no actor pool: the encode phase sorts its captions, and
the plan phase sorts its images, before any actor starts.

:mod:`pixart_batch.executors.ray` builds the pipelines; :func:`steps` lists the same operators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..config import RunConfig, StageConfig

WHOLE_CPU = 1.0
"""What a Ray 2.60 file listing or shuffle task asks (fixed in Ray; see the module docstring)."""


def shuffle_partitions(rows: int) -> int:
    """Partitions for an all-to-all step: ~100k small rows each, at least 1, at most 64."""
    return max(1, min(64, math.ceil(rows / 100_000)))


def generate_pools(config: RunConfig) -> list[tuple[str, StageConfig]]:
    """The actor pools of the generate phase, in pipeline order: ``(stage, its config)``.

    With ``stages.decode.colocate`` one pool of DiT + VAE actors sized by ``stages.denoise``, else a
    DiT pool and a VAE pool; with ``stages.score.enabled`` then a pool of CLIP actors."""
    stages = config.stages
    score = [("score", stages.score)] if stages.score.enabled else []
    if stages.decode.colocate:
        return [("generate", stages.denoise), *score]
    return [("denoise", stages.denoise), ("decode", stages.decode), *score]


@dataclass(frozen=True)
class Step:
    """One execution of a phase: its actor pools ``(stage, minimum actors, CPUs each)`` and its task
    operators ``(operator, CPUs of one task)``."""

    phase: str
    pools: tuple[tuple[str, int, float], ...] = ()
    tasks: tuple[tuple[str, float], ...] = ()

    @property
    def need(self) -> float:
        """The CPUs it needs at once (see the module docstring)."""
        if not self.pools:
            return max((cpus for _, cpus in self.tasks), default=0.0)
        return sum(size * cpus for _, size, cpus in self.pools) + sum(cpus for _, cpus in self.tasks)

    def detail(self) -> str:
        """``denoise 1×0.5 + decode 1×0.5 + one task each: repartition 0.25, ...``"""
        if not self.pools:
            name, cpus = max(self.tasks, key=lambda task: task[1])
            return f"its largest task: {name} {cpus:g}"
        pools = " + ".join(f"{name} {size}×{cpus:g}" for name, size, cpus in self.pools)
        tasks = ", ".join(f"{name} {cpus:g}" for name, cpus in self.tasks)
        return f"{pools} + one task each: {tasks}"


def _pool(name: str, stage: StageConfig) -> tuple[str, int, float]:
    return name, stage.pool_size()[0], stage.num_cpus


def steps(config: RunConfig) -> list[Step]:
    """Every execution of a Ray run that needs CPUs at once, phase by phase, with what each operator asks
    (each operator counted apart, also where Ray fuses two into one task: an upper bound)."""
    stages, task = config.stages, config.ray.task_num_cpus
    clean, write = stages.clean.num_cpus, stages.write.num_cpus
    listing, shuffle = ("file listing", WHOLE_CPU), ("shuffle", WHOLE_CPU)
    encode = (_pool("encode", stages.encode),)
    return [
        Step("clean", tasks=(listing, ("read prompts", task), ("clean", clean), shuffle)),
        Step("encode", tasks=(("captions", clean), shuffle, ("distinct", task), listing, ("join", task))),
        Step("encode", encode, (("repartition", task), ("store write", task))),  # its input sorted before
        Step("plan", tasks=(("expand", clean), ("plan write", task), listing, shuffle, ("join", task))),
        Step(
            "generate",
            tuple(_pool(name, stage) for name, stage in generate_pools(config)),
            (("repartition", task), ("embeddings", clean), ("image encoding and write", write)),
        ),
    ]


def require_cpus(config: RunConfig, available: float) -> None:
    """Refuse in one line a run with a phase that needs more CPUs at once than the cluster's ``available``."""
    for step in steps(config):
        if step.need > available + 1e-9:
            lower = "lower stages.*.num_cpus, stages.*.concurrency or ray.task_num_cpus, or "
            fix = f"{lower if step.pools else ''}add CPUs"
            raise UserError(
                f"the {step.phase} phase needs {step.need:g} CPUs at once ({step.detail()}) "
                f"but the Ray cluster has {available:g}; {fix}"
            )


def require_gpus(config: RunConfig, available: float) -> None:
    """Refuse in one line a run whose stages need more GPUs at once than the cluster's ``available``.

    The encode phase runs alone; DiT and VAE actors run together. Each pool needs its
    minimum size × ``num_gpus`` to start.
    """
    stages = config.stages
    phases: dict[str, list[tuple[str, StageConfig]]] = {
        "encode": [("encode", stages.encode)],
        "generate": [("denoise", stages.denoise)]
        + ([] if stages.decode.colocate else [("decode", stages.decode)])
        + ([("score", stages.score)] if stages.score.enabled else []),
    }
    for phase, members in phases.items():
        parts = [_pool(name, stage)[:2] + (stage.num_gpus,) for name, stage in members if stage.num_gpus > 0]
        need = sum(size * gpus for _, size, gpus in parts)
        if need > available + 1e-9:
            detail = " + ".join(f"{name} {size}×{gpus:g}" for name, size, gpus in parts)
            raise UserError(
                f"the {phase} stages need {need:g} GPUs at once ({detail}) but the Ray cluster has "
                f"{available:g}; lower stages.*.concurrency or num_gpus, or use a CPU recipe "
                "(configs/tiny.yaml, configs/cpu.yaml)"
            )
