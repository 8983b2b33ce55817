"""``pixart-batch status`` and ``pixart-batch verify``: what an output holds, and whether it is whole."""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from . import schema as S
from .dataset import DRY_RUN_POINTER_FILE, PLAN_POINTER_FILE, SETTINGS_FILE, STORE_POINTER_FILE, OutputDataset
from .errors import OutputError
from .ownership import MARKER_FILE
from .storage import Location, is_file, list_files, locate


def _open_output(uri: str) -> OutputDataset:
    output = OutputDataset(uri)
    if not any(is_file(output.location, output.location.join(name)) for name in (MARKER_FILE, SETTINGS_FILE)):
        raise OutputError(f"{output.uri}: not a pixart-batch output (no {MARKER_FILE} or {SETTINGS_FILE})")
    output.validate_metadata()  # damaged metadata: one line naming the file, exit 2
    return output


def store_location(output: OutputDataset) -> Location | None:
    """Where the output's embedding store is (``store.json``; a relative pointer is inside the output)."""
    pointer = output.read_object(STORE_POINTER_FILE, {"uri": str}, "store pointer", "delete it and re-run generate")
    if pointer is None:
        return None
    uri = pointer["uri"]
    if "://" in uri or uri.startswith("/"):
        return locate(uri)
    if ".." in uri.split("/"):
        raise OutputError(f"{output.location.join(STORE_POINTER_FILE)}: damaged store pointer (leaves the output); restore it")
    return output.location.child(*uri.split("/"))


def _store_parts(output: OutputDataset):
    """The output's embedding store location and its part files (``None, []`` before the first run)."""
    store = store_location(output)
    if store is None:
        return None, []
    return store, list_files(store, store.join("parts"), suffix=".parquet")


def _store_keys(output: OutputDataset) -> set[str]:
    """Caption keys in the output's embedding store."""
    import pyarrow.parquet as pq

    store, parts = _store_parts(output)
    keys: set[str] = set()
    for path in parts:
        try:
            with store.fs.open_input_file(path) as handle:
                keys.update(pq.read_table(handle, columns=[S.CAPTION_KEY]).column(0).to_pylist())
        except Exception:
            continue  # damaged: verify names it, the next run sets it aside
    return keys


def status(uri: str) -> dict[str, Any]:
    """Per bucket: planned / embedded / done / failed images (and totals)."""
    output = _open_output(uri)
    pointer = DRY_RUN_POINTER_FILE if output.plan_pointer(DRY_RUN_POINTER_FILE) is not None else PLAN_POINTER_FILE
    if not output.plan_files(pointer):
        raise OutputError(f"{output.uri}: no plan yet (the first run stopped before planning); re-run generate")
    plan = output.read_plan(name=pointer).to_pylist()
    done = output.committed_keys()
    failed = output.committed_failures()
    embedded = _store_keys(output)
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

    output = _open_output(uri)
    result = Verification()
    seen: dict[str, str] = {}
    shards = output.format  # Parquet or WebDataset (pixart_batch.writers): checked and read through it
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
            with store.fs.open_input_file(path) as handle:
                pq.read_table(handle)
        except Exception as exc:
            result.problems.append(f"{path}: unreadable embedding-store part ({exc})")
    from .dataset import check_parquet

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
