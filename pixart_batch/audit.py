"""``pixart-batch status`` and ``pixart-batch verify``: what an output holds, and whether it is whole."""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from . import schema as S
from .errors import OutputError, first_line, one_line
from .output import OutputDataset, open_output, store_location
from .output.formats import OutputFormat, check_parquet
from .output.layout import DRY_RUN_POINTER_FILE, PLAN_POINTER_FILE
from .ownership import Holder, current_holder
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


def _count(keys: list[str] | None) -> int | None:
    return None if keys is None else len(keys)


def _shard_keys(shards: OutputFormat, path: str) -> list[str] | None:
    """The keys a committed shard's key file lists (None when it cannot be read)."""
    import pyarrow.parquet as pq

    try:
        with shards.location.fs.open_input_file(shards.key_file(path)) as handle:
            return [str(key) for key in pq.read_table(handle, columns=[S.KEY]).column(0).to_pylist()]
    except Exception:  # unreadable: its images cannot be attributed to a bucket
        return None


def _damaged_shards(output: OutputDataset, bucket_of: dict[str, str]) -> list[dict[str, Any]]:
    """The committed shards the output's format rejects (what ``verify`` names and the next run sets
    aside), each with its reason, its planned images (None when its keys cannot be read) and their buckets."""
    shards = output.format
    found = []
    for damaged in shards.find_damaged():
        keys = _shard_keys(shards, damaged.path)
        buckets = Counter(bucket_of[key] for key in keys or () if key in bucket_of)
        found.append(
            {
                "path": damaged.path,
                "reason": one_line(damaged.reason),
                "keys": None if keys is None else sorted(key for key in keys if key in bucket_of),
                "buckets": dict(sorted(buckets.items())),
            }
        )
    return found


def status(uri: str) -> dict[str, Any]:
    """Per bucket: planned / embedded / done / failed images (and totals), the damaged shards (their
    images are not done: the next run sets the shard aside and makes them again), and ``running``: the
    live run that holds the output (:meth:`Holder.describe`), or None."""
    output = open_output(uri)
    holder = current_holder(output.location)
    return {**_status(output, holder), "running": holder.describe() if holder else None}


def _status(output: OutputDataset, holder: Holder | None) -> dict[str, Any]:
    dry = bool(output.plan_files(DRY_RUN_POINTER_FILE))
    pointer = PLAN_POINTER_FILE if output.plan_files(PLAN_POINTER_FILE) or not dry else DRY_RUN_POINTER_FILE
    if not output.plan_files(pointer):
        captions = _store_captions(output)
        if captions:
            return _encode_only(output, captions)
        if holder is not None:
            running = f"a run is writing this output ({holder.describe()})"
            raise OutputError(f"{output.uri}: no plan yet; {running}: try again later")
        raise OutputError(
            f"{output.uri}: no plan yet (the first run stopped before planning); re-run generate"
        )
    plan = output.read_plan(name=pointer).to_pylist()
    bucket_of = {row[S.KEY]: S.bucket_name(row[S.BUCKET_WIDTH], row[S.BUCKET_HEIGHT]) for row in plan}
    damaged = _damaged_shards(output, bucket_of)
    done = output.committed_keys() - {key for shard in damaged for key in shard["keys"] or ()}
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
    labelled = _label_counts(output, plan, done, failed)
    return {
        **labelled,
        "output": output.uri,
        "plan": "dry run" if pointer == DRY_RUN_POINTER_FILE else "latest run",
        "buckets": {name: {f: buckets[name][f] for f in fields} for name in sorted(buckets)},
        "total": {f: total[f] for f in fields},
        "not_in_plan": len(done - {row[S.KEY] for row in plan}),
        "damaged": [
            {
                "path": shard["path"],
                "reason": shard["reason"],
                "images": _count(shard["keys"]),
                "buckets": shard["buckets"],
            }
            for shard in damaged
        ],
        **({"dry_run": _dry_run_plan(output, done)} if dry and pointer == PLAN_POINTER_FILE else {}),
    }


def _store_captions(output: OutputDataset) -> int:
    """Rows in the output's embedding store (0 when it has none)."""
    import pyarrow.parquet as pq

    store, parts = _store_parts(output)
    total = 0
    for path in parts:
        try:
            assert store is not None
            with store.fs.open_input_file(path) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        except Exception:  # verify names it
            continue
    return total


def _encode_only(output: OutputDataset, captions: int) -> dict[str, Any]:
    """The status of an output that ``pixart-batch encode`` made: an embedding store, no plan."""
    zero = {f: 0 for f in ("planned", "embedded", "done", "failed")}
    return {
        "output": output.uri,
        "plan": "none (encode only)",
        "captions": captions,
        "buckets": {},
        "total": zero,
        "not_in_plan": 0,
        "damaged": [],
    }


def _dry_run_plan(output: OutputDataset, done: set[str]) -> dict[str, int]:
    """The latest dry run's plan (``dry_run.json``), beside the real plan: its images and how many are
    made."""
    keys = set(output.read_plan([S.KEY], name=DRY_RUN_POINTER_FILE).column(S.KEY).to_pylist())
    return {"planned": len(keys), "done": len(keys & done)}


def _label_counts(
    output: OutputDataset, plan: list[dict[str, Any]], done: set[str], failed: Any
) -> dict[str, Any]:
    """A labelled output's ``labels``: per class name (in id order), planned / done / failed images."""
    names = S.label_names(output.read_settings())
    if names is None or not plan or S.LABEL not in plan[0]:
        return {}
    labels = {name: Counter({"planned": 0, "done": 0, "failed": 0}) for name in names}
    for row in plan:
        number = row[S.LABEL]
        counts = labels.setdefault(names[number] if 0 <= number < len(names) else f"#{number}", Counter())
        counts["planned"] += 1
        counts["done"] += row[S.KEY] in done
        counts["failed"] += row[S.KEY] in failed
    return {"labels": {name: dict(counts) for name, counts in labels.items()}}


def format_status(report: dict[str, Any]) -> str:
    if "captions" in report:
        running = f" (a run is writing it now: {report['running']})" if report.get("running") else ""
        return (
            f"{report['output']}: an encode-only output (pixart-batch encode): {report['captions']} "
            "captions in its embedding store, no images planned; run generate with the same prompts to "
            f"make them{running}"
        )
    dry = " (plan of the latest dry run)" if report.get("plan") == "dry run" else ""
    lines = [f"{report['output']}{dry}"]
    if report.get("running"):
        lines.append(f"a run is writing this output ({report['running']}): the counts below are a snapshot")
    lines.append(f"{'bucket (w x h)':>16} {'planned':>9} {'embedded':>9} {'done':>9} {'failed':>9}")
    damaged = report.get("damaged") or []
    for name, counts in [*report["buckets"].items(), ("total", report["total"])]:
        line = f"{name:>16} " + " ".join(
            f"{counts[column]:>9}" for column in ("planned", "embedded", "done", "failed")
        )
        shards = [shard for shard in damaged if name in shard["buckets"]]
        if shards:
            images = sum(shard["buckets"][name] for shard in shards)
            line += f"  damaged: {_shards_text(len(shards))} ({images} images)"
        lines.append(line)
    if report.get("labels"):
        lines.append(f"{'label':>16} {'planned':>9} {'done':>9} {'failed':>9}")
        for name, counts in report["labels"].items():
            lines.append(f"{name:>16} {counts['planned']:>9} {counts['done']:>9} {counts['failed']:>9}")
    if report.get("dry_run"):
        dry = report["dry_run"]
        lines.append(
            f"the latest dry run (dry_run.json) planned {dry['planned']} images, {dry['done']} of them done; "
            "the table above is the real run's plan"
        )
    if report["not_in_plan"]:
        lines.append(f"{report['not_in_plan']} images in the dataset are not in the latest plan")
    if damaged:
        unknown = sum(shard["images"] is None for shard in damaged)
        first = damaged[0]
        one = len(damaged) == 1
        lines.append(
            f"damaged: {_shards_text(len(damaged))} "
            f"({'' if one else 'e.g. '}{first['path']}: {first['reason']})"
            + (
                f"; {'its keys are' if one else f'{unknown} have keys that are'} unreadable, "
                "so not in a bucket above"
                if unknown
                else ""
            )
            + f" — run `pixart-batch verify {report['output']}`; the next run sets "
            + f"{'it' if one else 'them'} aside and redoes {'its' if one else 'their'} images"
        )
    return "\n".join(lines)


def _shards_text(count: int) -> str:
    return f"{count} shard" if count == 1 else f"{count} shards"


EXIT_OK, EXIT_PROBLEMS, EXIT_IN_PROGRESS = 0, 1, 3
"""``verify``'s exit status: nothing damaged and every planned image present; damage, or planned images
missing or failed with no run writing the output; a live run holds the output and nothing read is
damaged (its missing images are work not done yet). 2 is a user error (not an output), as for every
command."""


@dataclass
class Verification:
    shards: int = 0
    """The output's shards (a WebDataset tar and its key index are one shard)."""
    store_parts: int = 0
    failure_tables: int = 0
    images: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Findings that are not damage: images from earlier plans, the live run and its progress."""
    holder: Holder | None = None
    """The live run that holds the output's lock (None: no run is writing it)."""
    vanished: int = 0
    """Files that a live run moved or replaced while they were read (not problems)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def in_progress(self) -> bool:
        return self.holder is not None

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_IN_PROGRESS if self.in_progress else EXIT_OK

    def problem(self, text: str) -> None:
        """Record a finding as one line (what it quotes is cut to its first line; any other line
        break left is folded into a space)."""
        self.problems.append(_one_line(text))

    def note(self, text: str) -> None:
        self.notes.append(_one_line(text))

    def summary(self) -> str:
        """The last line ``verify`` prints: verdict, images, shards and the other files read."""
        others = [f"{self.store_parts} embedding-store part{'s' * (self.store_parts != 1)}"]
        if self.failure_tables:
            others.append(f"{self.failure_tables} failures table{'s' * (self.failure_tables != 1)}")
        verdict = "FAILED" if self.problems else "IN PROGRESS" if self.in_progress else "OK"
        return (
            f"{verdict}: {self.images} images in {_shards_text(self.shards)} "
            f"({', '.join(others)}), {len(self.problems)} problem{'s' * (len(self.problems) != 1)}"
        )

    def lines(self) -> list[str]:
        """What ``verify`` prints: one line per note, then per problem, then :meth:`summary`."""
        notes = [f"note: {text}" for text in self.notes]
        return [*notes, *(f"problem: {text}" for text in self.problems), self.summary()]


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text.strip())


def _verify_row(result: Verification, seen: dict[str, str], path: str, row: dict[str, Any]) -> None:
    """One image: its key unique, its sha256 right, its pixels decode to the size the row says."""
    from PIL import Image

    key = row[S.KEY]
    if key in seen:
        result.problem(f"{path}: duplicate key {key} (also in {seen[key]})")
    seen[key] = path
    data = (row[S.IMAGE] or {}).get("bytes") or b""
    if hashlib.sha256(data).hexdigest() != row[S.SHA256]:
        result.problem(f"{path}: {key}: sha256 of the image bytes does not match")
        return
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.size != (row[S.WIDTH], row[S.HEIGHT]):
                result.problem(
                    f"{path}: {key}: image is {image.size[0]}x{image.size[1]}, "
                    f"row says {row[S.WIDTH]}x{row[S.HEIGHT]}"
                )
    except Exception as exc:
        result.problem(
            f"{path}: {key}: image does not decode ({first_line(exc, limit=None, with_type=True)})"
        )


def verify(uri: str) -> Verification:
    """Every file readable, no duplicate keys, every sha256 right, every planned image present.

    Images committed under an earlier plan (a later run with a smaller prompt file) are a note, not a
    problem. While a live run holds the output's lock, its missing images are work not done yet: a note
    names the run and its progress, and only damage is a problem (:data:`EXIT_IN_PROGRESS`)."""
    output = open_output(uri)
    result = Verification(holder=current_holder(output.location))
    seen: dict[str, str] = {}
    _verify_files(output, result, seen)
    if result.holder is None:
        result.holder = current_holder(output.location)  # a run that started while this one read
    _verify_plan(output, result, seen)
    return result


def _finding(output: OutputDataset, result: Verification, path: str, text: str) -> None:
    """A file that did not read: a problem, unless a live run moved or replaced it meanwhile (gone now)."""
    from .storage import is_file

    if not is_file(output.location, path):
        result.holder = result.holder or current_holder(output.location)
        if result.holder is not None:
            result.vanished += 1
            return
    result.problem(text)


def _verify_files(output: OutputDataset, result: Verification, seen: dict[str, str]) -> None:
    """Every shard (each row: :func:`_verify_row`), embedding-store part and failures table."""
    import pyarrow.parquet as pq

    shards = output.format  # Parquet or WebDataset (pixart_batch.output.formats): checked and read through it
    for path in shards.shard_files():
        result.shards += 1
        reason = shards.check(path)  # footer and keys; a tar's members against its key index
        if reason:
            _finding(output, result, path, f"{path}: damaged shard ({one_line(reason)})")
            continue
        try:
            for row in shards.read_rows(path):
                result.images += 1
                _verify_row(result, seen, path, row)
        except Exception as exc:  # any unreadable file is a finding, not a crash
            why = first_line(exc, limit=None, with_type=True)
            _finding(output, result, path, f"{path}: unreadable shard ({why})")
    store, parts = _store_parts(output)
    for path in parts:
        result.store_parts += 1
        try:
            assert store is not None  # parts come with their store
            with store.fs.open_input_file(path) as handle:
                pq.read_table(handle)
        except Exception as exc:
            result.problem(
                f"{path}: unreadable embedding-store part ({first_line(exc, limit=None, with_type=True)})"
            )
    for path in output.failure_files():
        result.failure_tables += 1
        reason = check_parquet(output.location, path, S.KEY)
        if reason:
            _finding(output, result, path, f"{path}: unreadable failures table ({reason})")


def _verify_plan(output: OutputDataset, result: Verification, seen: dict[str, str]) -> None:
    """The committed images against the latest plan: missing or failed ones are problems (the live run's
    progress while one holds the output); images outside the plan are a note."""
    running = f"a run is writing this output ({result.holder.describe()})" if result.holder else ""
    if result.vanished:
        result.note(f"{result.vanished} files were moved or replaced by the running run as verify read them")
    if not output.plan_files():
        if running:
            result.note(f"{running}; it has not planned its images yet; verify again once it ends")
        else:
            result.problem(f"{output.uri}: no plan (no run got as far as planning); re-run generate")
        return
    try:
        planned = set(output.read_plan([S.KEY]).column(S.KEY).to_pylist())
    except Exception as exc:
        if running:  # the running run replaced it as this one read it
            result.note(f"{running}; its plan changed while verify read it; verify again once it ends")
        else:
            why = first_line(exc, limit=None, with_type=True)
            result.problem(f"{output.location.join(PLAN_POINTER_FILE)}: unreadable plan ({why})")
        return
    failed = output.committed_failures()
    missing = sorted(planned - set(seen) - set(failed))
    extra = sorted(set(seen) - planned)
    if running:
        done = len(planned & set(seen))
        so_far = f", {len(set(failed) & planned)} failed so far" if failed else ""
        progress = f"{done} of {len(planned)} planned images committed{so_far}"
        result.note(f"{running}: {progress}; verify again once it ends")
    else:
        if missing:
            what = f"{len(missing)} planned images are missing (e.g. {missing[0]})"
            result.problem(f"{what}; re-run generate to finish")
        if failed:
            key = sorted(failed)[0]
            what = f"{len(failed)} planned images failed (e.g. {key}: {one_line(failed[key])})"
            result.problem(f"{what}; see failures/")
    if extra:
        result.note(
            f"{len(extra)} images are not in the latest plan (e.g. {extra[0]}): made under an earlier plan "
            "(a run with other prompts or settings into this output); intact, kept, and not a problem"
        )
