"""Prompt staging: the prompt file streamed into Parquet chunks under ``OUTPUT/.work/<run>/`` (where
every node of a cluster can read them); the driver holds one chunk at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..storage import write_parquet_atomic
from .guard import class_ids
from .layout import OutputDataset

if TYPE_CHECKING:
    from ..prompts import PromptRecord, PromptScan

PROMPT_CHUNK_ROWS = 50_000


def stage_prompts(
    output: OutputDataset,
    run_id: str,
    scan: PromptScan,
    default_negative: str,
    label_names: list[str] | None = None,
) -> list[str]:
    """Write the chunks of the scanned prompt file (with class ids by ``label_names`` for a labelled
    run); returns their paths. On failure the run's work folder is removed (nothing half-staged stays)."""
    from ..expansion import prompt_chunk
    from ..prompts import iter_prompts

    paths: list[str] = []
    chunk: list[PromptRecord] = []
    label_ids = None if label_names is None else class_ids(label_names)  # compared in NFC, as labels are read

    def flush() -> None:
        path = output.work_path(run_id, "prompts", f"part-{len(paths):05d}.parquet")
        write_parquet_atomic(
            output.location, path, prompt_chunk(chunk, default_negative, label_ids), compression="zstd"
        )
        paths.append(path)
        chunk.clear()

    try:
        for record in iter_prompts(scan.path, scan):
            chunk.append(record)
            if len(chunk) >= PROMPT_CHUNK_ROWS:
                flush()
        if chunk:
            flush()
    except BaseException:
        output.remove_work(run_id)
        raise
    return paths
