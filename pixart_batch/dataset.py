"""The output dataset: Parquet shards that ``datasets.load_dataset("parquet", data_dir=...)`` reads.

Layout::

    OUTPUT/data/<run>/<task//1000>/train-<run>-<task>-<n>.parquet   image rows (``image`` is a datasets Image feature)
    OUTPUT/README.md                             dataset card: features + generation settings (YAML)
    OUTPUT/settings.json                         the settings that determine the images (the guard)
    OUTPUT/store.json                            where this output's embedding store is
    OUTPUT/plan.json, plan/<run>/part-*.parquet  every planned image of the latest run (key, prompt, bucket)
    OUTPUT/.work/<run>/                          the run's staged prompt chunks (hidden; removed at the end)
    OUTPUT/failures/failures-<run>-*.parquet     images that kept failing: key and error message
    OUTPUT/run_config.json                       the resolved config of the latest run
    OUTPUT/run_report.json                       counts per stage and bucket, times, images/s
    OUTPUT/embeddings/                           the embedding store (unless configured elsewhere)

Every file is committed atomically (:mod:`.storage`), so a crash never leaves a
partial shard that a reader takes for data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import schema as S
from .errors import OutputError
from .faults import stall
from .storage import (
    Location,
    ParquetStreamWriter,
    is_file,
    list_files,
    locate,
    makedirs,
    move_aside,
    read_bytes,
    remove_temporaries,
    remove_tree,
    write_bytes_atomic,
    write_parquet_atomic,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Features

    from .prompts import PromptRecord, PromptScan

DATA_DIR = "data"
FAILURES_DIR = "failures"
SETTINGS_FILE = "settings.json"
PLAN_DIR = "plan"
PLAN_POINTER_FILE = "plan.json"
DRY_RUN_POINTER_FILE = "dry_run.json"
QUARANTINE_DIR = "quarantine"
WORK_DIR = ".work"
PROMPT_CHUNK_ROWS = 50_000
STORE_POINTER_FILE = "store.json"
SHARD_SETTINGS_KEY = b"pixart_batch.settings"
"""Parquet key-value metadata of every shard: the settings its images were made with (JSON)."""


def failure_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            (S.KEY, pa.string()),
            (S.PROMPT_ID, pa.string()),
            (S.IMAGE_INDEX, pa.int32()),
            (S.ERROR, pa.string()),
            (S.TRACEBACK, pa.string()),
            ("run", pa.string()),
        ]
    )


@dataclass
class Damaged:
    """A committed file that cannot be read whole (or is not one of ours)."""

    path: str
    reason: str


def check_parquet(location: Location, path: str, key_column: str) -> str | None:
    """Why a committed Parquet file cannot be used (None when it can): its footer, its schema's key
    column, and every value of that column must read. Cheap: the images are not decoded."""
    import pyarrow.parquet as pq

    try:
        with location.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            if key_column not in parquet.schema_arrow.names:
                return f"not a pixart-batch file (no '{key_column}' column)"
            keys = parquet.read(columns=[key_column])
            if keys.num_rows != parquet.metadata.num_rows:
                return f"{keys.num_rows} of {parquet.metadata.num_rows} rows readable"
    except Exception as exc:  # any failure to read is a finding
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def plan_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            (S.KEY, pa.string()),
            (S.PROMPT_ID, pa.string()),
            (S.IMAGE_INDEX, pa.int32()),
            (S.CAPTION_KEY, pa.string()),
            (S.NEGATIVE_KEY, pa.string()),
            (S.BUCKET_HEIGHT, pa.int32()),
            (S.BUCKET_WIDTH, pa.int32()),
        ]
    )


def features() -> Features:
    """The datasets ``Features`` of an image row (``image`` last)."""
    from datasets import Features, Image, Sequence, Value

    types = {
        S.KEY: Value("string"),
        S.PROMPT_ID: Value("string"),
        S.IMAGE_INDEX: Value("int32"),
        S.PROMPT: Value("string"),
        S.CAPTION: Value("string"),
        S.NEGATIVE_PROMPT: Value("string"),
        S.NEGATIVE_CAPTION: Value("string"),
        S.SEED: Value("int64"),
        S.STEPS: Value("int32"),
        S.GUIDANCE: Value("float32"),
        S.TIMESTEPS: Sequence(Value("int32")),
        S.MODEL: Value("string"),
        S.SCHEDULER: Value("string"),
        S.DTYPE: Value("string"),
        S.MAX_SEQ_LEN: Value("int32"),
        S.NUM_TOKENS: Value("int32"),
        S.TRUNCATED: Value("bool"),
        S.WIDTH: Value("int32"),
        S.HEIGHT: Value("int32"),
        S.BUCKET_WIDTH: Value("int32"),
        S.BUCKET_HEIGHT: Value("int32"),
        S.IMAGE_FORMAT: Value("string"),
        S.FAST_MODE: Value("string"),
        S.SHA256: Value("string"),
        S.IMAGE: Image(),
    }
    assert tuple(types) == S.OUTPUT_COLUMNS
    return Features(types)


def _card_feature(name: str, feature: Any) -> dict[str, Any]:
    """One entry of the card's ``dataset_info.features`` (the YAML the Hub and ``datasets`` read)."""
    if name == S.IMAGE:
        return {"name": name, "dtype": "image"}
    inner = getattr(feature, "feature", None)
    if inner is not None:  # a list of values
        return {"name": name, "list": inner.dtype}
    return {"name": name, "dtype": feature.dtype}


_RESTORE = "restore it from a copy, or write to a new output (nothing was written)"
_RECREATE = "delete it and re-run: the next run writes it again (nothing was written)"


class OutputDataset:
    def __init__(self, uri: str) -> None:
        self.location: Location = locate(uri)
        self.uri = self.location.uri

    def data_path(self, *parts: str) -> str:
        return self.location.join(DATA_DIR, *parts)

    def validate_metadata(self) -> None:
        """Read every metadata file of the output and refuse garbage (one line naming the file)."""
        self.read_settings()
        self.plan_pointer(PLAN_POINTER_FILE)
        self.plan_pointer(DRY_RUN_POINTER_FILE)
        self.read_object(STORE_POINTER_FILE, {"uri": str}, "store pointer", _RECREATE)
        self.read_object("run_report.json", {}, "run report", _RECREATE)
        self.read_object("run_config.json", {}, "run config", _RECREATE)

    def read_object(self, name: str, required: dict[str, type], what: str, fix: str = _RESTORE) -> dict[str, Any] | None:
        """A JSON metadata file of the output, validated (None when it does not exist).

        Garbage — not JSON, not an object, a key missing or of the wrong type — is one line naming
        the file and what to do; nothing is written.
        """
        path = self.location.join(name)
        if not is_file(self.location, path):
            return None
        try:
            data = json.loads(read_bytes(self.location, path))
        except (OSError, ValueError, RecursionError) as exc:
            raise OutputError(f"{path}: damaged {what} ({_first_line(exc)}); {fix}") from None
        if not isinstance(data, dict):
            raise OutputError(f"{path}: damaged {what} (a JSON {type(data).__name__}, expected an object); {fix}")
        for key, kind in required.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool) and kind is not bool:
                raise OutputError(f"{path}: damaged {what} ('{key}' missing or not a {kind.__name__}); {fix}")
        return data

    def check_writable(self) -> None:
        """Create the output folders and prove a file can be committed there (then remove it)."""
        try:
            makedirs(self.location, self.data_path())
            probe = self.location.join(".write-probe")
            write_bytes_atomic(self.location, probe, b"")
            self.location.fs.delete_file(probe)
        except OSError as exc:
            raise OutputError(f"{self.uri}: output is not writable ({exc.strerror or exc})") from None

    def prepare(self) -> int:
        """Remove what crashed runs left (temporaries, staged work); returns how many temporaries."""
        self.remove_work()
        return remove_temporaries(self.location, self.location.path)

    def find_damaged(self, paths: list[str], key_column: str, location: Location | None = None) -> list[Damaged]:
        """The files among ``paths`` that :func:`check_parquet` rejects (read in parallel threads)."""
        from concurrent.futures import ThreadPoolExecutor

        where = location or self.location
        with ThreadPoolExecutor(max_workers=8) as pool:
            reasons = list(pool.map(lambda path: check_parquet(where, path, key_column), paths))
        return [Damaged(path, reason) for path, reason in zip(paths, reasons, strict=True) if reason is not None]

    def quarantine(self, damaged: Damaged, run_id: str, location: Location | None = None) -> str:
        """Move a damaged file to ``quarantine/<run>/`` (never deleted): beside the output's own files, or
        inside the store's folder for a store outside the output. Returns where it went."""
        import posixpath

        where = location or self.location
        relative = posixpath.relpath(damaged.path, where.path)
        target = where.join(QUARANTINE_DIR, run_id, relative)
        move_aside(where, damaged.path, target)
        note = target + ".reason.txt"
        write_bytes_atomic(where, note, (damaged.reason + "\n").encode())
        return target

    def shard_files(self) -> list[str]:
        return list_files(self.location, self.data_path(), suffix=".parquet")

    def committed_keys(self) -> set[str]:
        """Keys of every readable shard (damaged ones are ``verify``'s and ``generate``'s business)."""
        import pyarrow.parquet as pq

        keys: set[str] = set()
        for path in self.shard_files():
            try:
                with self.location.fs.open_input_file(path) as handle:
                    keys.update(pq.read_table(handle, columns=[S.KEY]).column(0).to_pylist())
            except Exception:
                continue
        return keys

    def read_settings(self) -> dict[str, Any] | None:
        """The settings recorded by an earlier run, or None for a new output."""
        return self.read_object(SETTINGS_FILE, {}, "settings")

    def shard_settings(self) -> dict[str, Any] | None:
        """The settings the committed shards record in their metadata (None when there are no shards).

        Refuses shards that disagree, or that record none (written before shards carried them)."""
        import pyarrow.parquet as pq

        found: dict[str, Any] | None = None
        for path in self.shard_files():
            try:
                with self.location.fs.open_input_file(path) as handle:
                    metadata = pq.ParquetFile(handle).schema_arrow.metadata or {}
            except Exception:
                continue  # a damaged shard: quarantined by the run
            if SHARD_SETTINGS_KEY not in metadata:
                raise OutputError(
                    f"{self.location.join(SETTINGS_FILE)}: missing, and {path} does not record its settings; "
                    "restore settings.json or write to a new output"
                )
            settings = json.loads(metadata[SHARD_SETTINGS_KEY])
            if found is not None and settings != found:
                raise OutputError(f"{path}: records other settings than the output's other shards; this output mixes settings")
            found = settings
        return found

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse a run whose settings would change images already in this output.

        The guard is ``settings.json``, or — when that is missing — the settings every shard records."""
        from .spec import GROWABLE_SETTINGS, default_of, leaf_fields

        recorded = self.read_settings()
        if recorded is None:
            recorded = self.shard_settings()
        if recorded is None:
            return
        for name in sorted(set(recorded) | set(settings)):
            before, now = recorded.get(name), settings.get(name)
            if before == now:
                continue
            if name in GROWABLE_SETTINGS and isinstance(before, int) and isinstance(now, int) and now > before:
                continue
            if name not in recorded and name in leaf_fields() and now == default_of(name):
                continue  # a setting added after this output was made, at its default: the images it made
            raise OutputError(
                f"{self.uri}: setting '{name}' is {json.dumps(now)} but this output was generated with {json.dumps(before)}; "
                "re-run with the same setting, or write to a new output"
            )

    def committed_failures(self) -> dict[str, str]:
        """``{key: error}`` of failed images that are not (yet) in the dataset."""
        import pyarrow.parquet as pq

        failures: dict[str, str] = {}
        for path in self.failure_files():
            try:
                with self.location.fs.open_input_file(path) as handle:
                    rows = pq.read_table(handle, columns=[S.KEY, S.ERROR]).to_pylist()
            except Exception:
                continue  # damaged: verify names it, the next run sets it aside
            for row in rows:
                failures[row[S.KEY]] = row[S.ERROR]
        committed = self.committed_keys()
        return {key: error for key, error in failures.items() if key not in committed}

    def failure_files(self) -> list[str]:
        return list_files(self.location, self.location.join(FAILURES_DIR), suffix=".parquet")

    def write_failures(self, table: pa.Table, name: str) -> None:
        write_parquet_atomic(self.location, self.location.join(FAILURES_DIR, name), table.cast(failure_schema()))

    def stage_prompts(self, run_id: str, scan: PromptScan, default_negative: str) -> list[str]:
        """Stream the prompt file into Parquet chunks under ``.work/<run>/`` (where every node can
        read them); the driver holds one chunk at a time. Returns the chunk paths."""
        from .plan import prompt_chunk
        from .prompts import iter_prompts

        paths: list[str] = []
        chunk: list[PromptRecord] = []

        def flush() -> None:
            path = self.location.join(WORK_DIR, run_id, "prompts", f"part-{len(paths):05d}.parquet")
            write_parquet_atomic(self.location, path, prompt_chunk(chunk, default_negative), compression="zstd")
            paths.append(path)
            chunk.clear()

        for record in iter_prompts(scan.path, scan):
            chunk.append(record)
            if len(chunk) >= PROMPT_CHUNK_ROWS:
                flush()
        if chunk:
            flush()
        return paths

    def remove_work(self, run_id: str | None = None) -> None:
        """Delete staged work of ``run_id`` (or of every run: crashed runs leave theirs behind)."""
        path = self.location.join(WORK_DIR, run_id) if run_id else self.location.join(WORK_DIR)
        remove_tree(self.location, path)

    def write_plan_part(self, run_id: str, table: pa.Table, name: str) -> None:
        write_parquet_atomic(
            self.location,
            self.location.join(PLAN_DIR, run_id, name),
            table.cast(plan_schema()),
            row_group_size=100_000,
            compression="zstd",
        )

    def commit_plan(self, run_id: str, images: int, dry_run: bool = False) -> None:
        """Point ``plan.json`` at this run's plan, then drop older plans.

        A dry run points ``dry_run.json`` at its plan instead and leaves the real plan alone, so a
        dry run never changes what ``verify`` checks."""
        from pyarrow import fs

        keep = {run_id}
        if dry_run:
            self.write_json(DRY_RUN_POINTER_FILE, {"run": run_id, "images": images})
            real = self.plan_pointer(PLAN_POINTER_FILE)
            if real is not None:
                keep.add(real["run"])
        else:
            self.write_json(PLAN_POINTER_FILE, {"run": run_id, "images": images})
            if is_file(self.location, self.location.join(DRY_RUN_POINTER_FILE)):
                self.location.fs.delete_file(self.location.join(DRY_RUN_POINTER_FILE))
        for info in self.location.fs.get_file_info(fs.FileSelector(self.location.join(PLAN_DIR), allow_not_found=True)):
            if info.type == fs.FileType.Directory and info.base_name not in keep:
                remove_tree(self.location, info.path)

    def plan_pointer(self, name: str = PLAN_POINTER_FILE) -> dict[str, Any] | None:
        data = self.read_object(name, {"run": str, "images": int}, "plan pointer", _RECREATE)
        if data is not None and not data["run"].isalnum():
            raise OutputError(f"{self.location.join(name)}: damaged plan pointer (run {data['run']!r}); {_RECREATE}")
        return data

    def plan_files(self, name: str = PLAN_POINTER_FILE) -> list[str]:
        """Part files of the latest plan (empty if no run got as far as planning)."""
        pointer = self.plan_pointer(name)
        if pointer is None:
            return []
        return list_files(self.location, self.location.join(PLAN_DIR, pointer["run"]), suffix=".parquet")

    def read_plan(self, columns: list[str] | None = None, name: str = PLAN_POINTER_FILE) -> pa.Table:
        """The latest plan as one Arrow table (inspection commands; the pipeline never loads it)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for path in self.plan_files(name):
            with self.location.fs.open_input_file(path) as handle:
                tables.append(pq.read_table(handle, columns=columns))
        return pa.concat_tables(tables) if tables else plan_schema().empty_table().select(columns or plan_schema().names)

    def write_shard(self, table: pa.Table, name: str, row_group_size: int) -> int:
        return write_parquet_atomic(
            self.location,
            self.data_path(name),
            table,
            row_group_size=row_group_size,
            compression="zstd",
            before_commit=lambda: stall("shard-commit"),
        )

    def open_shard(self, name: str, settings: dict[str, Any] | None = None) -> ParquetStreamWriter:
        """A streaming writer of the shard ``data/<name>`` (:func:`shard_schema`), committed atomically
        like :meth:`write_shard`: call ``write(table, row_group_size)`` per row group, then ``commit()``."""
        return ParquetStreamWriter(
            self.location,
            self.data_path(name),
            shard_schema(settings),
            before_commit=lambda: stall("shard-commit"),
            compression="zstd",
        )

    def write_json(self, name: str, data: Any) -> None:
        write_bytes_atomic(self.location, self.location.join(name), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def write_card(self, settings: dict[str, Any], counts: dict[str, Any]) -> None:
        import yaml

        feature_list = [_card_feature(name, feature) for name, feature in features().items()]
        front = {
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA_DIR}/**/*.parquet"}]}],
            "dataset_info": {"features": feature_list},
            "generation": settings,
        }
        body = (
            "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n"
            "# Synthetic images generated with pixart_batch\n\n"
            f"{counts.get('images_total', 0)} images from {counts.get('prompts', 0)} prompts, "
            f"model `{settings.get('model')}`.\n\n"
            "Each row records what reproduces its image with plain diffusers: `prompt`, `negative_prompt`, "
            '`seed` (a `torch.Generator("cpu").manual_seed(seed)`), `num_inference_steps`, `guidance_scale`, '
            "and the bucket size (`bucket_height` × `bucket_width`, `use_resolution_binning=False`); "
            "`width` × `height` is the final image after diffusers' resize-and-crop.\n\n"
            "```python\nfrom datasets import load_dataset\n"
            'ds = load_dataset("parquet", data_dir="data", split="train")\n```\n'
        )
        write_bytes_atomic(self.location, self.location.join("README.md"), body.encode())

    def to_table(
        self, batch: dict[str, np.ndarray], constants: dict[str, Any], settings: dict[str, Any] | None = None
    ) -> pa.Table:
        """An Arrow table in the output schema from a stage batch (``image_bytes`` → ``image``); the
        run's settings go into the schema metadata (:data:`SHARD_SETTINGS_KEY`)."""
        import pyarrow as pa

        size = len(batch[S.KEY])
        columns: dict[str, Any] = {}
        for name in S.OUTPUT_COLUMNS:
            if name == S.IMAGE:
                columns[name] = [
                    {"bytes": blob, "path": f"{key}.{constants[S.IMAGE_FORMAT]}"}
                    for key, blob in zip(batch[S.KEY], batch["image_bytes"], strict=True)
                ]
            elif name in constants:
                columns[name] = [constants[name]] * size
            else:
                columns[name] = batch[name].tolist()
        return pa.Table.from_pydict(columns, schema=shard_schema(settings))


def shard_schema(settings: dict[str, Any] | None = None) -> pa.Schema:
    """The Arrow schema of a shard: the datasets features, and the run's settings in the metadata
    (:data:`SHARD_SETTINGS_KEY`) when given."""
    schema = features().arrow_schema
    if settings is not None:
        recorded = json.dumps(settings, sort_keys=True).encode()
        schema = schema.with_metadata({**(schema.metadata or {}), SHARD_SETTINGS_KEY: recorded})
    return schema
