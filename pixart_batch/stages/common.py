"""What every model stage shares: grouping rows, isolating failures, timing.

A stage processes its batch in groups (one aspect bucket / output size per group). If a
group raises, it is split in halves and each half retried, down to single rows: an
out-of-memory batch still makes its images (in smaller calls), and one bad image cannot
take its neighbours down. The first exception of a group is logged with its traceback. A
row that fails alone gets its message in the ``error`` column and its traceback in
``traceback``, and is passed through untouched by later stages (the writer records it in
the failures table instead of the dataset). Crashes of the process itself are Ray's to retry.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from .. import schema as S
from ..faults import raise_if_injected, stall
from .columns import PRESENT, Columns, columns

log = logging.getLogger("pixart_batch")

G = TypeVar("G", bound=Hashable)
"""A group key (a bucket, an output size)."""


def group_rows(keys: list[G]) -> dict[G, list[int]]:
    """Row indices grouped by key, in first-seen order."""
    groups: dict[G, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    return groups


def group_reads(*names: str, **when: Iterable[str]) -> Columns:
    """The reads of a stage that runs :func:`run_groups`: ``names`` and what it reads itself (each row's
    key and error, the tracebacks of earlier failures when an earlier stage recorded them)."""
    return columns(*names, S.KEY, S.ERROR, present=(S.TRACEBACK, *when.pop(PRESENT, ())), **when)


def group_writes(stage: str, *names: str, **when: Iterable[str]) -> Columns:
    """The writes of a stage that runs :func:`run_groups` as ``stage``: ``names`` and what it writes
    itself (error, traceback, the stage's busy seconds)."""
    return columns(*names, S.ERROR, S.TRACEBACK, S.BUSY_COLUMNS[stage], **when)


def error_text(stage: str, exc: BaseException) -> str:
    return f"{stage}: {type(exc).__name__}: {exc}".replace("\n", " ")[:1000]


def run_groups(
    batch: dict[str, np.ndarray],
    stage: str,
    group_of: Callable[[int], G],
    process: Callable[[G, list[int]], Sequence[object]],
    output_column: str,
) -> dict[str, np.ndarray]:
    """Fill ``output_column`` by calling ``process(group, indices)`` per group of healthy rows.

    ``process`` returns one output per index. Rows already failed upstream are skipped.
    Adds ``_busy_<stage>_s`` (seconds of this call, spread over the rows).
    """
    start = time.perf_counter()
    stall(stage)
    size = len(batch[S.KEY])
    errors = batch[S.ERROR].astype(object).copy()
    tracebacks = (
        batch[S.TRACEBACK].astype(object).copy()
        if S.TRACEBACK in batch
        else np.array([""] * size, dtype=object)
    )
    outputs: list[object] = [b""] * size
    keys = batch[S.KEY].tolist()
    healthy = [i for i in range(size) if not errors[i]]

    def attempt(group: G, indices: list[int], first: bool = True) -> None:
        try:
            raise_if_injected(stage, [keys[i] for i in indices])
            results = process(group, indices)
        except Exception as exc:
            if len(indices) == 1:  # failed on its own: record it, keep the batch
                errors[indices[0]] = error_text(stage, exc)
                tracebacks[indices[0]] = traceback.format_exc()[-8000:]
                return
            if first:  # the original exception, once per group (not once per split)
                log.warning(
                    "%s: a group of %d images failed; retrying in halves", stage, len(indices), exc_info=True
                )
            half = len(indices) // 2
            attempt(group, indices[:half], False)
            attempt(group, indices[half:], False)
            return
        for index, value in zip(indices, results, strict=True):
            outputs[index] = value

    for group, positions in group_rows([group_of(i) for i in healthy]).items():
        attempt(group, [healthy[p] for p in positions])
    column = np.empty(
        size, dtype=object
    )  # element by element: numpy would turn a list of equal-length bytes into a 2-D array
    for index, value in enumerate(outputs):
        column[index] = value
    batch[output_column] = column
    batch[S.ERROR] = errors
    batch[S.TRACEBACK] = tracebacks
    batch[S.BUSY_COLUMNS[stage]] = np.full(size, (time.perf_counter() - start) / max(size, 1))
    return batch
