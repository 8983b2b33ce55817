"""What every model stage shares: grouping rows, isolating failures, timing.

A stage processes its batch in groups (one aspect bucket / output size per group). If a
group raises, each of its rows is retried alone, so one bad image cannot take its
neighbours down; a row that still fails gets its message in the ``error`` column and
is passed through untouched by later stages (the writer records it in the failures
table instead of the dataset). Crashes of the process itself are Ray's to retry.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Hashable

import numpy as np

from .. import schema as S
from ..faults import raise_if_injected, stall


def group_rows(keys: list[Hashable]) -> dict[Hashable, list[int]]:
    """Row indices grouped by key, in first-seen order."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    return groups


def run_groups(
    batch: dict[str, np.ndarray],
    stage: str,
    group_of: Callable[[int], Hashable],
    process: Callable[[Hashable, list[int]], list[object]],
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
    outputs: list[object] = [b""] * size
    keys = batch[S.KEY].tolist()
    healthy = [i for i in range(size) if not errors[i]]
    groups = group_rows([group_of(i) for i in healthy])
    for group, positions in groups.items():
        indices = [healthy[p] for p in positions]
        try:
            raise_if_injected(stage, [keys[i] for i in indices])
            results = process(group, indices)
        except Exception:  # isolate: retry each row alone
            results = None
        if results is not None:
            for index, value in zip(indices, results):
                outputs[index] = value
            continue
        for index in indices:
            try:
                raise_if_injected(stage, [keys[index]])
                outputs[index] = process(group, [index])[0]
            except Exception as exc:  # the row failed on its own: record it, keep the batch
                errors[index] = f"{stage}: {type(exc).__name__}: {exc}".replace("\n", " ")[:1000]
    column = np.empty(size, dtype=object)  # element by element: numpy would turn a list of equal-length bytes into a 2-D array
    for index, value in enumerate(outputs):
        column[index] = value
    batch[output_column] = column
    batch[S.ERROR] = errors
    batch[f"_busy_{stage}_s"] = np.full(size, (time.perf_counter() - start) / max(size, 1))
    return batch
