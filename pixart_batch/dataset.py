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
from typing import Any

import numpy as np

from . import schema as S
from .errors import OutputError
from .faults import stall
from .storage import Location, list_files, locate, makedirs, remove_temporaries, write_bytes_atomic, write_parquet_atomic

DATA_DIR = "data"
FAILURES_DIR = "failures"
SETTINGS_FILE = "settings.json"
PLAN_DIR = "plan"
PLAN_POINTER_FILE = "plan.json"
WORK_DIR = ".work"
PROMPT_CHUNK_ROWS = 50_000
STORE_POINTER_FILE = "store.json"
SHARD_SETTINGS_KEY = b"pixart_batch.settings"
"""Parquet key-value metadata of every shard: the settings its images were made with (JSON)."""


def failure_schema():
    import pyarrow as pa

    return pa.schema([(S.KEY, pa.string()), (S.PROMPT_ID, pa.string()), (S.IMAGE_INDEX, pa.int32()), (S.ERROR, pa.string()), ("run", pa.string())])


def plan_schema():
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


def features():
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


class OutputDataset:
    def __init__(self, uri: str) -> None:
        self.location: Location = locate(uri)
        self.uri = self.location.uri

    def data_path(self, *parts: str) -> str:
        return self.location.join(DATA_DIR, *parts)

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

    def shard_files(self) -> list[str]:
        return list_files(self.location, self.data_path(), suffix=".parquet")

    def committed_keys(self) -> set[str]:
        import pyarrow.parquet as pq

        keys: set[str] = set()
        for path in self.shard_files():
            with self.location.fs.open_input_file(path) as handle:
                keys.update(pq.read_table(handle, columns=[S.KEY]).column(0).to_pylist())
        return keys

    def read_settings(self) -> dict[str, Any] | None:
        """The settings recorded by an earlier run, or None for a new output."""
        from .storage import is_file, read_bytes

        path = self.location.join(SETTINGS_FILE)
        if not is_file(self.location, path):
            return None
        try:
            return json.loads(read_bytes(self.location, path))
        except (OSError, ValueError) as exc:
            raise OutputError(f"{path}: unreadable settings ({exc}); this output was not written by pixart-batch") from None

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse a run whose settings would change images already in this output."""
        from .spec import GROWABLE_SETTINGS

        recorded = self.read_settings()
        if recorded is None:
            return
        for name in sorted(set(recorded) | set(settings)):
            before, now = recorded.get(name), settings.get(name)
            if before == now:
                continue
            if name in GROWABLE_SETTINGS and isinstance(before, int) and isinstance(now, int) and now > before:
                continue
            raise OutputError(
                f"{self.uri}: setting '{name}' is {json.dumps(now)} but this output was generated with {json.dumps(before)}; "
                "re-run with the same setting, or write to a new output"
            )

    def committed_failures(self) -> dict[str, str]:
        """``{key: error}`` of failed images that are not (yet) in the dataset."""
        import pyarrow.parquet as pq

        failures: dict[str, str] = {}
        for path in list_files(self.location, self.location.join(FAILURES_DIR), suffix=".parquet"):
            with self.location.fs.open_input_file(path) as handle:
                for row in pq.read_table(handle, columns=[S.KEY, S.ERROR]).to_pylist():
                    failures[row[S.KEY]] = row[S.ERROR]
        committed = self.committed_keys()
        return {key: error for key, error in failures.items() if key not in committed}

    def write_failures(self, table, name: str) -> None:
        write_parquet_atomic(self.location, self.location.join(FAILURES_DIR, name), table.cast(failure_schema()))

    def stage_prompts(self, run_id: str, scan, default_negative: str) -> list[str]:
        """Stream the prompt file into Parquet chunks under ``.work/<run>/`` (where every node can
        read them); the driver holds one chunk at a time. Returns the chunk paths."""
        from .plan import prompt_chunk
        from .prompts import iter_prompts

        paths, chunk = [], []

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
        try:
            self.location.fs.delete_dir(path)
        except (FileNotFoundError, OSError):
            pass

    def write_plan_part(self, run_id: str, table, name: str) -> None:
        write_parquet_atomic(self.location, self.location.join(PLAN_DIR, run_id, name), table.cast(plan_schema()), row_group_size=100_000, compression="zstd")

    def commit_plan(self, run_id: str, images: int) -> None:
        """Point ``plan.json`` at this run's plan, then drop older plans."""
        from pyarrow import fs

        self.write_json(PLAN_POINTER_FILE, {"run": run_id, "images": images})
        for info in self.location.fs.get_file_info(fs.FileSelector(self.location.join(PLAN_DIR), allow_not_found=True)):
            if info.type == fs.FileType.Directory and info.base_name != run_id:
                self.location.fs.delete_dir(info.path)

    def plan_files(self) -> list[str]:
        """Part files of the latest plan (empty if no run got as far as planning)."""
        from .storage import is_file, read_bytes

        pointer = self.location.join(PLAN_POINTER_FILE)
        if not is_file(self.location, pointer):
            return []
        run_id = json.loads(read_bytes(self.location, pointer))["run"]
        return list_files(self.location, self.location.join(PLAN_DIR, run_id), suffix=".parquet")

    def read_plan(self, columns: list[str] | None = None):
        """The latest plan as one Arrow table (inspection commands; the pipeline never loads it)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for path in self.plan_files():
            with self.location.fs.open_input_file(path) as handle:
                tables.append(pq.read_table(handle, columns=columns))
        return pa.concat_tables(tables) if tables else plan_schema().empty_table().select(columns or plan_schema().names)

    def write_shard(self, table, name: str, row_group_size: int) -> int:
        return write_parquet_atomic(
            self.location, self.data_path(name), table, row_group_size=row_group_size, compression="zstd", before_commit=lambda: stall("shard-commit")
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
            "`seed` (a `torch.Generator(\"cpu\").manual_seed(seed)`), `num_inference_steps`, `guidance_scale`, "
            "and the bucket size (`bucket_height` × `bucket_width`, `use_resolution_binning=False`); "
            "`width` × `height` is the final image after diffusers' resize-and-crop.\n\n"
            "```python\nfrom datasets import load_dataset\n"
            'ds = load_dataset("parquet", data_dir="data", split="train")\n```\n'
        )
        write_bytes_atomic(self.location, self.location.join("README.md"), body.encode())

    def to_table(self, batch: dict[str, np.ndarray], constants: dict[str, Any], settings: dict[str, Any] | None = None):
        """An Arrow table in the output schema from a stage batch (``image_bytes`` → ``image``); the
        run's settings go into the schema metadata (:data:`SHARD_SETTINGS_KEY`)."""
        import pyarrow as pa

        size = len(batch[S.KEY])
        columns: dict[str, Any] = {}
        for name in S.OUTPUT_COLUMNS:
            if name == S.IMAGE:
                columns[name] = [{"bytes": blob, "path": f"{key}.{constants[S.IMAGE_FORMAT]}"} for key, blob in zip(batch[S.KEY], batch["image_bytes"])]
            elif name in constants:
                columns[name] = [constants[name]] * size
            else:
                columns[name] = batch[name].tolist()
        schema = features().arrow_schema
        if settings is not None:
            schema = schema.with_metadata({**(schema.metadata or {}), SHARD_SETTINGS_KEY: json.dumps(settings, sort_keys=True).encode()})
        return pa.Table.from_pydict(columns, schema=schema)
