"""The output dataset: shards that ``datasets.load_dataset(OUTPUT)`` reads (README.md's ``configs``).

Layout::

    OUTPUT/data/<run>/<task//1000>/train-<run>-<task>-<n>.parquet   image rows (``image`` is a datasets Image feature)
      or    data/<run>/<task//1000>/<task><n>.tar + .keys.parquet  with output.format webdataset (:mod:`.writers`)
    OUTPUT/README.md                             Hub dataset card: configs, features, settings, images per bucket
    OUTPUT/sample_grid.jpg                       a few images per bucket (linked from the card)
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

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import schema as S
from .errors import OutputError, first_line
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
    from .writers import OutputFormat

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
SAMPLE_GRID_FILE = "sample_grid.jpg"
FORMAT_SETTING = "output.format"
SETTING_DEFAULTS = {FORMAT_SETTING: "parquet"}
"""What a setting was before it existed: outputs made then stay usable (and guarded)."""
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
        return first_line(exc, with_type=True)
    return None


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


def card_features() -> list[dict[str, Any]]:
    """The card's ``dataset_info.features`` of a Parquet row."""
    return [_card_feature(name, feature) for name, feature in features().items()]


def _size_category(images: int) -> str:
    """The Hub's ``size_categories`` value for ``images`` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    bounds += [(10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((name for bound, name in bounds if images < bound), "1B<n<10B")


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
    def __init__(self, uri: str, output_format: str | None = None) -> None:
        """``output_format``: ``output.format`` of the run writing it; None for an existing output
        (its ``settings.json``, else what its shards are, else Parquet)."""
        self.location: Location = locate(uri)
        self.uri = self.location.uri
        self._format_name = output_format
        self._format: OutputFormat | None = None

    def format_on_disk(self) -> str:
        """The format the committed shards are in (Parquet when there are none)."""
        return "webdataset" if list_files(self.location, self.data_path(), suffix=".tar") else "parquet"

    @property
    def format(self) -> OutputFormat:
        """The :class:`~.writers.OutputFormat` of the shards: everything about them goes through it."""
        from .writers import FORMATS

        if self._format is None:
            name = self._format_name
            if name is None:
                recorded = self.read_settings() or {}
                name = recorded.get(FORMAT_SETTING)
            if name is None:  # no settings.json (or written before output.format existed)
                name = self.format_on_disk()
            if name not in FORMATS:
                raise OutputError(f"{self.uri}: unknown output format {name!r} in {SETTINGS_FILE}; {_RESTORE}")
            self._format = FORMATS[name](self)
        return self._format

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
            raise OutputError(f"{path}: damaged {what} ({first_line(exc, with_type=True)}); {fix}") from None
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
        """Remove what crashed runs left (temporaries, staged work, a shard's companion committed
        without its shard); returns how many temporaries and companions."""
        self.remove_work()
        return remove_temporaries(self.location, self.location.path) + self.format.remove_uncommitted()

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
        return self.format.shard_files()

    def committed_keys(self) -> set[str]:
        """Keys of every readable shard (damaged ones are ``verify``'s and ``generate``'s business)."""
        return self.format.committed_keys()

    def read_settings(self) -> dict[str, Any] | None:
        """The settings recorded by an earlier run, or None for a new output."""
        return self.read_object(SETTINGS_FILE, {}, "settings")

    def shard_settings(self) -> dict[str, Any] | None:
        """The settings the committed shards record in their metadata (None when there are no shards).

        Refuses shards that disagree, or that record none (written before shards carried them)."""
        import pyarrow.parquet as pq

        from .writers import FORMATS

        found: dict[str, Any] | None = None
        # The shards (Parquet) or their key indexes (WebDataset) of the shards there are, whatever
        # format this run asks for: a run in another format is refused by the settings they record.
        for path in FORMATS[self.format_on_disk()](self).key_files():
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
            before, now = recorded.get(name, SETTING_DEFAULTS.get(name)), settings.get(name)
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
        """``README.md``: a Hub dataset card (``huggingface_hub.DatasetCard``) whose ``configs`` point
        at the shards, so ``load_dataset(OUTPUT)`` and a Hub upload of the folder read them; with the
        generation settings, the images per bucket and ``sample_grid.jpg``."""
        from huggingface_hub import DatasetCard, DatasetCardData

        described = self.format.describe()
        buckets = self.bucket_counts()
        images = sum(buckets.values())
        grid = self.write_sample_grid(sorted(buckets, key=lambda name: (-buckets[name], name)))
        extra: dict[str, Any] = {"dataset_info": {"features": described["features"]}} if described["features"] else {}
        data = DatasetCardData(
            pretty_name="Synthetic images generated with pixart_batch",
            task_categories=["text-to-image"],
            tags=["synthetic", "pixart", "pixart-batch", described["format"]],
            size_categories=[_size_category(images)],
            configs=[{"config_name": "default", "data_files": [{"split": "train", "path": described["data_files"]}]}],
            **extra,
            generation=settings,
        )
        rows = "\n".join(f"| {name} | {buckets[name]} |" for name in sorted(buckets))
        loader = 'ds = load_dataset(OUTPUT, split="train")  # this folder (or its Hub repo): README\'s configs find the shards'
        layout = (
            "Parquet shards (`data/<run>/<task//1000>/train-*.parquet`), one row per image."
            if described["format"] == "parquet"
            else "WebDataset tar shards (`data/<run>/<task//1000>/*.tar`): per image `KEY.<image format>`, `KEY.json` "
            "(every other column of the row) and `KEY.txt` (the caption); `*.keys.parquet` beside each tar lists its keys."
        )
        body = (
            "# Synthetic images generated with pixart_batch\n\n"
            f"{images} images from {counts.get('prompts', 0)} prompts ({counts.get('images_total', images)} planned), "
            f"model `{settings.get('model')}`. {layout}\n\n"
            "Each row records what reproduces its image with plain diffusers: `prompt`, `negative_prompt`, "
            '`seed` (a `torch.Generator("cpu").manual_seed(seed)`), `num_inference_steps`, `guidance_scale`, '
            "and the bucket size (`bucket_height` × `bucket_width`, `use_resolution_binning=False`); "
            "`width` × `height` is the final image after diffusers' resize-and-crop.\n\n"
            f"```python\nfrom datasets import load_dataset\n{loader}\n```\n\n"
            "## Images per bucket\n\n| bucket (width x height) | images |\n|---|---|\n"
            f"{rows}\n\n"
            + (f"## Samples\n\n![a few images per bucket]({grid})\n\n" if grid else "")
            + "## Generation settings\n\n"
            f"```json\n{json.dumps(settings, indent=2, sort_keys=True)}\n```\n"
        )
        card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
        write_bytes_atomic(self.location, self.location.join("README.md"), str(card).encode())

    def bucket_counts(self) -> dict[str, int]:
        """Committed images per bucket (``WIDTHxHEIGHT``) of the latest plan."""
        from collections import Counter

        done = self.committed_keys()
        plan = self.read_plan([S.KEY, S.BUCKET_WIDTH, S.BUCKET_HEIGHT]).to_pydict()
        columns = (plan[S.KEY], plan[S.BUCKET_WIDTH], plan[S.BUCKET_HEIGHT])
        return dict(Counter(S.bucket_name(w, h) for key, w, h in zip(*columns, strict=True) if key in done))

    def write_sample_grid(self, buckets: list[str], per_bucket: int = 4, most_buckets: int = 8, cell: int = 192) -> str | None:
        """``sample_grid.jpg``: a row of up to ``per_bucket`` images for each of the first
        ``most_buckets`` buckets; reads shards only until the rows are full. Returns its name."""
        from PIL import Image, ImageDraw

        wanted = buckets[:most_buckets]
        found: dict[str, list[bytes]] = {name: [] for name in wanted}
        for path in self.shard_files():
            try:
                for row in self.format.read_rows(path):
                    name = S.bucket_name(row[S.BUCKET_WIDTH], row[S.BUCKET_HEIGHT])
                    if name in found and len(found[name]) < per_bucket:
                        found[name].append(row[S.IMAGE]["bytes"])
                    if all(len(blobs) == per_bucket for blobs in found.values()):
                        break
            except Exception:
                continue  # a damaged shard: verify names it
            if all(len(blobs) == per_bucket for blobs in found.values()):
                break
        rows = [name for name in wanted if found[name]]
        if not rows:
            return None
        label = 18
        grid = Image.new("RGB", (cell * per_bucket, (cell + label) * len(rows)), "white")
        draw = ImageDraw.Draw(grid)
        for y, name in enumerate(rows):
            top = y * (cell + label)
            draw.text((4, top + 3), name, fill="black")
            for x, blob in enumerate(found[name]):
                with Image.open(io.BytesIO(blob)) as image:
                    thumb = image.convert("RGB")
                    thumb.thumbnail((cell, cell))
                grid.paste(thumb, (x * cell + (cell - thumb.width) // 2, top + label + (cell - thumb.height) // 2))
        buffer = io.BytesIO()
        grid.save(buffer, format="JPEG", quality=85)
        write_bytes_atomic(self.location, self.location.join(SAMPLE_GRID_FILE), buffer.getvalue())
        return SAMPLE_GRID_FILE

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
