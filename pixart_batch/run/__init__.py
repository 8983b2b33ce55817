"""The run as an application (Ray-free): :func:`plan_run` checks everything and writes nothing;
:func:`execute` carries the plan out with an executor (:mod:`pixart_batch.executors`)."""

from __future__ import annotations

from .app import RunPlan, execute, plan_run, run_generate

__all__ = ["RunPlan", "execute", "plan_run", "run_generate"]
