"""The Ray run's monitor: the one helper actor, counting finished and failed images across every actor
(a restartable :class:`~.base.PolledCounter`), pinned to the driver's node; what a stage calls after each
batch (:class:`MonitorCalls`) and the driver's poll (:class:`MonitorPoll`), both tolerating its restart."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import ray

from .base import FailureLimits, PolledCounter

if TYPE_CHECKING:
    from ray.actor import ActorHandle

MONITOR_PATIENCE_S = 30.0
"""How long a stage waits for the monitor's verdict on a batch (a restart takes seconds), then goes on."""


def start_monitor(limits: FailureLimits) -> ActorHandle:
    """The run's monitor, on the driver's node: losing that node ends the run anyway, and no worker node's
    loss can take the monitor with it (Ray would otherwise place it anywhere). ``max_restarts=-1``: a dead
    monitor process is restarted there; ``max_task_retries=-1``: the calls it had not answered are retried.
    ``num_cpus=0``: it only counts, and must not take a CPU from the stages."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    options = {"num_cpus": 0, "scheduling_strategy": here, "max_restarts": -1, "max_task_retries": -1}
    monitor: Any = ray.remote(PolledCounter)  # Any: Ray's stubs do not type options(**dict)
    return monitor.options(**options).remote(limits.max_consecutive, limits.max_rate, limits.rate_after)


class MonitorCalls:
    """What a stage calls after each batch: the monitor's verdict, waiting out a restart or a moment of
    unavailability with a short backoff for at most ``patience_s``, then going on without a verdict (the
    batch is never lost because of the monitor; a stage that gave up once waits only a second next time)."""

    def __init__(self, monitor: ActorHandle, patience_s: float = MONITOR_PATIENCE_S) -> None:
        self.monitor, self.patience_s, self.gave_up = monitor, patience_s, False

    def __call__(self, ok: int, errors: list[str]) -> str | None:
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + (1.0 if self.gave_up else self.patience_s)
        ref, wait = None, 0.25
        while True:
            ref = self.monitor.record.remote(ok, errors) if ref is None else ref
            left = deadline - time.monotonic()
            try:
                verdict, self.gave_up = ray.get(ref, timeout=max(min(wait, left), 0.01)), False
                return verdict
            except GetTimeoutError:
                pass  # still queued: Ray retries it on the restarted monitor, so wait for the same call
            except RayActorError:
                ref = None  # this call is lost: make it again after the backoff
                time.sleep(max(min(wait, left), 0))
            if time.monotonic() >= deadline:
                logging.getLogger(__name__).warning("the run's monitor did not answer: this batch goes on")
                self.gave_up = True
                return None
            wait = min(2 * wait, 4.0)


class MonitorPoll:
    """The driver's poll of the monitor: ``(made, failed)``; the last counts while it does not answer."""

    def __init__(self, monitor: ActorHandle) -> None:
        self.monitor, self.seen = monitor, None

    def __call__(self) -> tuple[int, int]:
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            self.seen = ray.get(self.monitor.poll.remote(self.seen), timeout=10)
        except (GetTimeoutError, RayActorError):
            pass
        return (self.seen[0], self.seen[1]) if self.seen else (0, 0)
