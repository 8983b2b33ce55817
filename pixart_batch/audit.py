"""``pixart-batch status`` and ``pixart-batch verify``: what an output holds, and whether it is whole."""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from . import schema as S
from .errors import OutputError
from .output import OutputDataset, open_output, store_location
from .output.formats import check_parquet
from .output.layout import DRY_RUN_POINTER_FILE, PLAN_POINTER_FILE
from .storage import Location


def _store_parts(output: OutputDataset) -> tuple[Location | None, list[str]]:
    """The output's embedding store location and its part files (``None, []`` before the first run)."""
    store = store_location(output)
    if store is None:
        return None, []
    from .store import part_files

    return store, part_files(store)


def _store_keys(output: OutputDataset, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` caption keys the output's embedding store holds."""
    from .store import held_keys

    store = store_location(output)
    return set() if store is None else held_keys(store, wanted)


def status(uri: str) -> dict[str, Any]:
    """Per bucket: planned / embedded / done / failed images (and totals)."""
    output = open_output(uri)
    pointer = DRY_RUN_POINTER_FILE if output.plan_pointer(DRY_RUN_POINTER_FILE) is not None else PLAN_POINTER_FILE
    if not output.plan_files(pointer):
        raise OutputError(f"{output.uri}: no plan yet (the first run stopped before planning); re-run generate")
    plan = output.read_plan(name=pointer).to_pylist()
    done = output.committed_keys()
    failed = output.committed_failures()
    embedded = _store_keys(output, {row[key] for row in plan for key in (S.CAPTION_KEY, S.NEGATIVE_KEY)})
    buckets: dict[str, Counter] = defaultdict(Counter)
    for row in plan:
        counts = buckets[S.bucket_name(row[S.BUCKET_WIDTH], row[S.BUCKET_HEIGHT])]
        counts["planned"] += 1
        counts["embedded"] += row[S.CAPTION_KEY] in embedded and row[S.NEGATIVE_KEY] in embedded
        counts["done"] += row[S.KEY] in done
        counts["failed"] += row[S.KEY] in failed
    total: Counter = Counter()
    for counts in buckets.values():
        total.update(counts)
    fields = ("planned", "embedded", "done", "failed")
    return {
        "output": output.uri,
        "plan": "dry run" if pointer == DRY_RUN_POINTER_FILE else "latest run",
        "buckets": {name: {f: buckets[name][f] for f in fields} for name in sorted(buckets)},
        "total": {f: total[f] for f in fields},
        "not_in_plan": len(done - {row[S.KEY] for row in plan}),
    }


def format_status(report: dict[str, Any]) -> str:
    lines = [
        f"{report['output']}" + (" (plan of the latest dry run)" if report.get("plan") == "dry run" else ""),
        f"{'bucket (w x h)':>16} {'planned':>9} {'embedded':>9} {'done':>9} {'failed':>9}",
    ]
    for name, counts in [*report["buckets"].items(), ("total", report["total"])]:
        lines.append(f"{name:>16} {counts['planned']:>9} {counts['embedded']:>9} {counts['done']:>9} {counts['failed']:>9}")
    if report["not_in_plan"]:
        lines.append(f"{report['not_in_plan']} images in the dataset are not in the latest plan")
    return "\n".join(lines)


@dataclass
class Verification:
    files: int = 0
    images: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_row(result: Verification, seen: dict[str, str], path: str, row: dict[str, Any]) -> None:
    """One image: its key unique, its sha256 right, its pixels decode to the size the row says."""
    from PIL import Image

    key = row[S.KEY]
    if key in seen:
        result.problems.append(f"{path}: duplicate key {key} (also in {seen[key]})")
    seen[key] = path
    data = (row[S.IMAGE] or {}).get("bytes") or b""
    if hashlib.sha256(data).hexdigest() != row[S.SHA256]:
        result.problems.append(f"{path}: {key}: sha256 of the image bytes does not match")
        return
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.size != (row[S.WIDTH], row[S.HEIGHT]):
                result.problems.append(
                    f"{path}: {key}: image is {image.size[0]}x{image.size[1]}, row says {row[S.WIDTH]}x{row[S.HEIGHT]}"
                )
    except Exception as exc:
        result.problems.append(f"{path}: {key}: image does not decode ({exc})")


def verify(uri: str) -> Verification:
    """Every file readable, no duplicate keys, every sha256 right, counts equal to the plan."""
    import pyarrow.parquet as pq

    output = open_output(uri)
    result = Verification()
    seen: dict[str, str] = {}
    shards = output.format  # Parquet or WebDataset (pixart_batch.output.formats): checked and read through it
    for path in shards.shard_files():
        result.files += 1
        reason = shards.check(path)  # footer and keys; a tar's members against its key index
        if reason:
            result.problems.append(f"{path}: damaged shard ({reason})")
            continue
        try:
            for row in shards.read_rows(path):
                result.images += 1
                _verify_row(result, seen, path, row)
        except Exception as exc:  # any unreadable file is a finding, not a crash
            result.problems.append(f"{path}: unreadable shard ({exc})")
    store, parts = _store_parts(output)
    for path in parts:
        result.files += 1
        try:
            assert store is not None  # parts come with their store
            with store.fs.open_input_file(path) as handle:
                pq.read_table(handle)
        except Exception as exc:
            result.problems.append(f"{path}: unreadable embedding-store part ({exc})")
    for path in output.failure_files():
        result.files += 1
        reason = check_parquet(output.location, path, S.KEY)
        if reason:
            result.problems.append(f"{path}: unreadable failures table ({reason})")
    if not output.plan_files():
        result.problems.append(f"{output.uri}: no plan (no run got as far as planning); re-run generate")
        return result
    try:
        planned = set(output.read_plan([S.KEY]).column(S.KEY).to_pylist())
    except Exception as exc:
        result.problems.append(f"{output.location.join(PLAN_POINTER_FILE)}: unreadable plan ({exc})")
        return result
    failed = output.committed_failures()
    missing = sorted(planned - set(seen) - set(failed))
    extra = sorted(set(seen) - planned)
    if missing:
        result.problems.append(f"{len(missing)} planned images are missing (e.g. {missing[0]}); re-run generate to finish")
    if failed:
        key = sorted(failed)[0]
        result.problems.append(f"{len(failed)} planned images failed (e.g. {key}: {failed[key]}); see failures/")
    if extra:
        result.problems.append(f"{len(extra)} images are not in the latest plan (e.g. {extra[0]})")
    return result
