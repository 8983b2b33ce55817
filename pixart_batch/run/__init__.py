"""The run as an application (Ray-free): :func:`prepare_run` checks everything and writes nothing;
:func:`execute` carries the plan out with an executor (:mod:`pixart_batch.executors`)."""

from __future__ import annotations

from .app import PreparedRun, execute, prepare_run, run_generate

__all__ = ["PreparedRun", "execute", "prepare_run", "run_generate"]
