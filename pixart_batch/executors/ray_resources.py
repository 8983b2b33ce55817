"""The CPUs each phase of a Ray run asks of the cluster at once, and the check that they fit (Ray-free).

Ray Data runs a phase as one or more executions (a ``materialize``, a ``write_datasink``); the operators
of one execution run at the same time. An actor pool holds its minimum actors' CPUs for the whole
execution; a task operator holds one task's CPUs while a task runs. So an execution with actor pools
needs the pools' minimum CPUs plus one task of each of its task operators: with less, Ray Data may lend
what the actors leave to some operators while another never gets a task started (the 300 s
``ExecutionTimeoutError`` of a small cluster). An execution without actor pools holds nothing between
tasks: its largest task is enough.

Every task operator's CPUs come from the execution spec: ``ray.task_num_cpus`` for Ray Data's own operators
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
    from ..execution import ExecutionSpec, StageExecution

WHOLE_CPU = 1.0
"""What a Ray 2.60 file listing or shuffle task asks (fixed in Ray; see the module docstring)."""


def shuffle_partitions(rows: int) -> int:
    """Partitions for an all-to-all step: ~100k small rows each, at least 1, at most 64."""
    return max(1, min(64, math.ceil(rows / 100_000)))


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


def _pool(stage: StageExecution, name: str) -> tuple[str, int, float]:
    return name, stage.concurrency[0], stage.num_cpus


def steps(execution: ExecutionSpec) -> list[Step]:
    """Every execution of a Ray run that needs CPUs at once, phase by phase, with what each operator asks
    (each operator counted apart, also where Ray fuses two into one task: an upper bound)."""
    task = execution.ray.task_num_cpus
    clean, write = execution.clean.num_cpus, execution.write.num_cpus
    listing, shuffle = ("file listing", WHOLE_CPU), ("shuffle", WHOLE_CPU)
    encode = (_pool(execution.encode, execution.encode.name),)
    return [
        Step("clean", tasks=(listing, ("read prompts", task), ("clean", clean), shuffle)),
        Step("encode", tasks=(("captions", clean), shuffle, ("distinct", task), listing, ("join", task))),
        Step("encode", encode, (("repartition", task), ("store write", task))),  # its input sorted before
        Step("plan", tasks=(("expand", clean), ("plan write", task), listing, shuffle, ("join", task))),
        Step(
            "generate",
            tuple(_pool(stage, stage.name) for stage in execution.generate),
            (("repartition", task), ("embeddings", clean), ("image encoding and write", write)),
        ),
    ]


def require_cpus(execution: ExecutionSpec, available: float) -> None:
    """Refuse in one line a run with a phase that needs more CPUs at once than the cluster's ``available``."""
    for step in steps(execution):
        if step.need > available + 1e-9:
            lower = "lower stages.*.num_cpus, stages.*.concurrency or ray.task_num_cpus, or "
            fix = f"{lower if step.pools else ''}add CPUs"
            raise UserError(
                f"the {step.phase} phase needs {step.need:g} CPUs at once ({step.detail()}) "
                f"but the Ray cluster has {available:g}; {fix}"
            )


def require_gpus(execution: ExecutionSpec, available: float) -> None:
    """Refuse in one line a run whose stages need more GPUs at once than the cluster's ``available``.

    The encode phase runs alone; the generate phase's stages run together (a colocated DiT + VAE stage
    once, named by the stage whose resources it takes). Each pool needs its minimum size × ``num_gpus``
    to start.
    """
    phases = {"encode": (execution.encode,), "generate": execution.generate}
    for phase, members in phases.items():
        parts = [
            _pool(stage, stage.source)[:2] + (stage.num_gpus,) for stage in members if stage.num_gpus > 0
        ]
        need = sum(size * gpus for _, size, gpus in parts)
        if need > available + 1e-9:
            detail = " + ".join(f"{name} {size}×{gpus:g}" for name, size, gpus in parts)
            raise UserError(
                f"the {phase} stages need {need:g} GPUs at once ({detail}) but the Ray cluster has "
                f"{available:g}; lower stages.*.concurrency or num_gpus, or use a CPU recipe "
                "(configs/tiny.yaml, configs/cpu.yaml)"
            )
