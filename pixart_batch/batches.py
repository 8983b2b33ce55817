"""Batches as the stages pass them: dicts of equal-length numpy columns (Ray Data's ``numpy`` format)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

Batch = dict[str, np.ndarray]


def rows(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def take(batch: Batch, which: np.ndarray | slice) -> Batch:
    """The rows ``which`` (a slice, a boolean mask or indices) of every column."""
    return {name: column[which] for name, column in batch.items()}


def chunks(batch: Batch, size: int) -> Iterator[Batch]:
    """Consecutive pieces of at most ``size`` rows."""
    for start in range(0, rows(batch), size):
        yield take(batch, slice(start, start + size))


def concat(batches: list[Batch]) -> Batch:
    """One batch of the rows of ``batches`` (same columns), in order."""
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
