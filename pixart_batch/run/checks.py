"""Checks of a run that need no writing: each refuses with one line before anything is written (and the
model-card settings warning, one line at the start of a run); and whether a re-run has nothing left to do."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..storage import is_file

if TYPE_CHECKING:
    import pyarrow as pa

    from ..config import RunConfig
    from ..output import OutputDataset
    from ..output.formats import Damaged
    from ..prompts import PromptScan
    from ..spec import RunSpec
    from ..store import EmbeddingStore

MAX_SIDE_FACTOR = 4
"""The largest image side accepted: this many times the model's native side (4096 px for PixArt-XL-2-1024);
beyond it a decode needs tens of GB per image and no bucket is near the requested shape."""


def check_quantization(config: RunConfig) -> None:
    """Refuse up front a T5 quantization this environment cannot run (not inside an actor, restarted
    forever)."""
    stage = config.stages.encode
    needs = {
        "int8": ("torchao", "pip install torchao"),
        "bnb-int8": ("bitsandbytes", "pip install bitsandbytes"),
        "bnb-nf4": ("bitsandbytes", "pip install bitsandbytes"),
    }.get(stage.quantization)
    if needs is None:
        return
    module, hint = needs
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"stages.encode.quantization {stage.quantization} needs {module} ({hint}, "
            "or pip install -e '.[lowvram]')"
        )
    if stage.quantization.startswith("bnb") and stage.num_gpus <= 0:
        raise UserError(
            f"stages.encode.quantization {stage.quantization}: bitsandbytes runs on CUDA only; "
            "set stages.encode.num_gpus or use int8"
        )


def check_sizes(spec: RunSpec, scan: PromptScan) -> None:
    """Refuse before anything starts: steps the scheduler cannot run and sizes beyond what the model can
    make."""
    generation = spec.config.generation
    limit = MAX_SIDE_FACTOR * spec.geometry.native_size
    sides = [("generation.width", generation.width), ("generation.height", generation.height)]
    if scan.largest_side:
        side, where = scan.largest_side
        sides.append((f"{where}: requested size", side))
    for name, value in sides:
        if value is not None and value > limit:
            raise UserError(
                f"{name}: {value} px is larger than {limit} px, the most this model makes "
                f"({MAX_SIDE_FACTOR}x its native {spec.geometry.native_size} px side)"
            )
    steps_limit = spec.max_steps
    if generation.num_inference_steps > steps_limit:
        raise UserError(
            f"generation.num_inference_steps: {generation.num_inference_steps} is more than "
            f"{spec.scheduler_class} accepts for this checkpoint ({steps_limit})"
        )


def card_settings_warning(spec: RunSpec) -> str | None:
    """One line when an LCM or DMD checkpoint runs with steps or guidance far from its model card."""
    from ..families import card_settings, card_warning

    generation = spec.config.generation
    card = card_settings(spec.model.shipped_scheduler, spec.model.name)
    return card_warning(card, generation.num_inference_steps, generation.guidance_scale)


# --------------------------------------------------------------------------- nothing to do
# A re-run of a finished job decides that nothing is left from the output's own files, before any
# executor, model or heavy import starts. Every condition below must hold; anything else (or any doubt:
# an unreadable file) sends the run through the executor, where the full checks run as always.


def prompt_bytes(scan: PromptScan) -> dict[str, Any]:
    """What the report records of the prompts (:attr:`RunReport.prompt_file`): the bytes the scan read,
    and the columns a table's fields were read from where they are not the fields' names."""
    fingerprint = scan.fingerprint
    if fingerprint is None:
        return {}
    columns = scan.source.mapped() if scan.source is not None else {}
    return {"sha256": fingerprint.sha256, "bytes": fingerprint.bytes_read, "columns": columns}


def finished_report(output: OutputDataset, scan: PromptScan) -> dict[str, Any] | None:
    """The report of the output's last run when that run finished everything it planned from these
    prompt bytes and its plan is still the latest; None otherwise. Reads three small files."""
    from ..output.layout import CARD_FILE, REPORT_FILE, SETTINGS_FILE

    report = output.read_object(REPORT_FILE, {}, "run report")
    pointer = output.plan_pointer()
    if report is None or pointer is None or not prompt_bytes(scan):
        return None
    finished = (
        not report.get("dry_run")
        and not report.get("encode_only")
        and report.get("images_failed") == 0
        and report.get("prompt_file") == prompt_bytes(scan)
        and report.get("plan_run") == pointer["run"]
        and report.get("images_planned") == pointer["images"]
    )
    location = output.location
    if not finished or not all(is_file(location, location.join(name)) for name in (SETTINGS_FILE, CARD_FILE)):
        return None
    return report


@dataclass(frozen=True)
class Left:
    """What an output holds of a run's plan (:func:`left_to_do`): ``reason`` is None when nothing is left."""

    reason: str | None
    planned: int = 0
    captions: int = 0
    """Distinct captions the plan needs embedded (negative prompts included with CFG)."""
    captions_empty: int = 0
    buckets: dict[str, int] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)


def left_to_do(
    output: OutputDataset,
    scan: PromptScan,
    images_per_prompt: int,
    store: EmbeddingStore,
    negatives: bool,
) -> Left:
    """Whether the output's latest plan is this run's (the prompt ids × ``images_per_prompt``, counted
    again from the file), every planned image is in a shard that reads whole, every caption it needs is
    in the store, and no shard, failure table or store part is damaged: what a run would do if it ran."""
    import pyarrow.compute as pc

    from .. import schema as S

    damaged = damaged_files(output, store)
    if any(damaged):
        return Left(f"{sum(map(len, damaged))} damaged files to set aside")
    plan = output.read_plan()
    keys = plan.column(S.KEY).combine_chunks()
    expected = planned_keys(scan, images_per_prompt)
    if len(keys) != len(expected) or not pc.all(pc.is_in(expected, value_set=keys)).as_py():
        return Left("the latest plan is not this prompt file's")
    missing = len(keys) - (pc.sum(pc.is_in(keys, value_set=output.format.key_array())).as_py() or 0)
    if missing:
        return Left(f"{missing} planned images not committed")
    captions = set(plan.column(S.CAPTION_KEY).unique().to_pylist())
    if negatives:
        captions |= set(plan.column(S.NEGATIVE_KEY).unique().to_pylist())
    unheld = len(captions - store.held_keys(captions))
    if unheld:
        return Left(f"{unheld} captions not in the embedding store")
    return Left(None, len(keys), len(captions), _empty_captions(plan), _buckets(plan), _labels(plan))


def damaged_files(
    output: OutputDataset, store: EmbeddingStore
) -> tuple[list[Damaged], list[Damaged], list[Damaged]]:
    """What a run sets aside: the output's damaged shards, failure tables and the store's damaged parts."""
    from .. import schema as S

    failures = output.find_damaged(output.failure_files(), S.KEY)
    return (
        output.format.find_damaged(),
        failures,
        output.find_damaged(store.part_files(), S.CAPTION_KEY, store.location),
    )


def planned_keys(scan: PromptScan, images_per_prompt: int) -> pa.Array:
    """Every image key of the prompt file (``<prompt id>-<index:05d>``), from a second pass that checks
    the file still has the scanned bytes; Arrow strings, not Python objects (millions of keys)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..prompts import iter_prompts

    chunks, ids = [], []
    for record in iter_prompts(scan.source or scan.path, scan):
        ids.append(record.prompt_id)
        if len(ids) == 65536:
            chunks.append(pa.array(ids, pa.string()))
            ids = []
    every = pa.chunked_array([*chunks, pa.array(ids, pa.string())], pa.string()).combine_chunks()
    keys = [pc.binary_join_element_wise(every, f"{index:05d}", "-") for index in range(images_per_prompt)]
    return pa.chunked_array(keys, pa.string()).combine_chunks()


def _empty_captions(plan: pa.Table) -> int:
    """Prompts whose cleaned caption is empty (their caption key is the empty text's)."""
    import pyarrow.compute as pc

    from .. import schema as S
    from ..store import caption_key

    first = plan.filter(pc.equal(plan.column(S.IMAGE_INDEX), 0))
    return int(pc.sum(pc.equal(first.column(S.CAPTION_KEY), caption_key(""))).as_py() or 0)


def _buckets(plan: pa.Table) -> dict[str, int]:
    from collections import Counter

    from .. import schema as S

    widths, heights = plan.column(S.BUCKET_WIDTH).to_pylist(), plan.column(S.BUCKET_HEIGHT).to_pylist()
    return dict(sorted(Counter(S.bucket_name(w, h) for w, h in zip(widths, heights, strict=True)).items()))


def _labels(plan: pa.Table) -> dict[int, int]:
    from collections import Counter

    from .. import schema as S

    if S.LABEL not in plan.column_names:
        return {}
    return dict(sorted(Counter(plan.column(S.LABEL).to_pylist()).items()))
