"""An output folder: its layout, its metadata files, its plan and failures, and the format of its shards.

Layout::

    OUTPUT/data/...                              the shards, in the output's format (:mod:`.formats`)
    OUTPUT/README.md                             Hub dataset card: configs, features, settings, images
                                                 per bucket
    OUTPUT/sample_grid.jpg                       a few images per bucket (linked from the card)
    OUTPUT/settings.json                         the settings that determine the images (the guard,
                                                 :mod:`.guard`)
    OUTPUT/store.json                            where this output's embedding store is
    OUTPUT/plan.json, plan/<run>/part-*.parquet  every planned image of the latest run (key, prompt, bucket)
    OUTPUT/.work/<run>/                          the run's staged prompt chunks (hidden; removed at the end)
    OUTPUT/failures/failures-<run>-*.parquet     images that kept failing: key and error message
    OUTPUT/run_config.json                       the resolved config of the latest run
    OUTPUT/run_report.json                       counts per stage and bucket, times, images/s
    OUTPUT/dry_run_report.json                   the report of the latest dry run (the real run's stays)
    OUTPUT/gallery/                              ``pixart-batch gallery``'s pages
    OUTPUT/embeddings/                           the embedding store (unless configured elsewhere)

Every file is committed atomically (:mod:`pixart_batch.storage`), so a crash never leaves a
partial shard that a reader takes for data.
"""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING, Any

from .. import schema as S
from ..errors import OutputError, a_or_an, first_line, one_line
from ..ownership import LEGACY_SETTINGS_FILE, LOCK_FILE, MARKER_FILE
from ..storage import (
    Location,
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
from .formats import DATA_DIR, FORMATS, Damaged, OutputFormat, detect_format, find_damaged, make_format

if TYPE_CHECKING:
    import pyarrow as pa

FAILURES_DIR = "failures"
SETTINGS_FILE = LEGACY_SETTINGS_FILE  # the marker of outputs made before .pixart-batch existed, too
PLAN_DIR = "plan"
PLAN_POINTER_FILE = "plan.json"
DRY_RUN_POINTER_FILE = "dry_run.json"
QUARANTINE_DIR = "quarantine"
WORK_DIR = ".work"
STORE_POINTER_FILE = "store.json"
STORE_DIR = "embeddings"
"""The embedding store's root when none is configured (``OUTPUT/embeddings``)."""
GALLERY_DIR = "gallery"
REPORT_FILE = "run_report.json"
DRY_RUN_REPORT_FILE = "dry_run_report.json"
"""A dry run's report: beside the real run's, which it leaves alone."""
CONFIG_FILE = "run_config.json"
CARD_FILE = "README.md"
SAMPLE_GRID_FILE = "sample_grid.jpg"
FORMAT_SETTING = "output.format"
OWN_DIRS = (DATA_DIR, STORE_DIR, WORK_DIR, QUARANTINE_DIR, GALLERY_DIR, PLAN_DIR, FAILURES_DIR)
"""The folders an output's runs and commands write, move files in, or remove."""
OWN_FILES = (
    SETTINGS_FILE,
    STORE_POINTER_FILE,
    PLAN_POINTER_FILE,
    DRY_RUN_POINTER_FILE,
    REPORT_FILE,
    DRY_RUN_REPORT_FILE,
    CONFIG_FILE,
    CARD_FILE,
    SAMPLE_GRID_FILE,
    MARKER_FILE,
    LOCK_FILE,
)
"""The files a run writes at the top of its output."""

RESTORE = "restore it from a copy, or write to a new output (nothing was written)"
RECREATE = "delete it and re-run: the next run writes it again (nothing was written)"


class OutputDataset:
    def __init__(self, uri: str, output_format: str | None = None) -> None:
        """``output_format``: ``output.format`` of the run writing it; None for an existing output
        (its ``settings.json``, else what its shards are, else Parquet)."""
        self.location: Location = locate(uri)
        self.uri = self.location.uri
        self._format_name = output_format
        self._format: OutputFormat | None = None

    @property
    def format(self) -> OutputFormat:
        """The :class:`~.formats.OutputFormat` of the shards: everything about them goes through it."""
        if self._format is None:
            name = self._format_name
            if name is None:
                name = (self.read_settings() or {}).get(FORMAT_SETTING)
            if name is None:  # no settings.json (or written before output.format existed)
                name = detect_format(self.location)
            if name not in FORMATS:
                raise OutputError(f"{self.uri}: unknown output format {name!r} in {SETTINGS_FILE}; {RESTORE}")
            self._format = make_format(name, self.location)
        return self._format

    def format_on_disk(self) -> OutputFormat:
        """The format of the shards the folder holds, whatever the run asks for (Parquet when there are
        none)."""
        return make_format(detect_format(self.location), self.location)

    def data_path(self, *parts: str) -> str:
        return self.location.join(DATA_DIR, *parts)

    # -- metadata files
    def validate_metadata(self) -> None:
        """Read every metadata file of the output and refuse garbage (one line naming the file)."""
        self.read_settings()
        self.plan_pointer(PLAN_POINTER_FILE)
        self.plan_pointer(DRY_RUN_POINTER_FILE)
        self.read_object(STORE_POINTER_FILE, {"uri": str}, "store pointer", RECREATE)
        self.read_object(REPORT_FILE, {}, "run report", RECREATE)
        self.read_object(CONFIG_FILE, {}, "run config", RECREATE)

    def read_object(
        self, name: str, required: dict[str, type], what: str, fix: str = RESTORE
    ) -> dict[str, Any] | None:
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
            raise OutputError(
                f"{path}: damaged {what} (a JSON {type(data).__name__}, expected an object); {fix}"
            )
        for key, kind in required.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool) and kind is not bool:
                raise OutputError(
                    f"{path}: damaged {what} ('{key}' missing or not {a_or_an(kind.__name__)}); {fix}"
                )
        return data

    def read_settings(self) -> dict[str, Any] | None:
        """The settings recorded by an earlier run, or None for a new output (a labelled output's
        class names must be a list of distinct strings)."""
        settings = self.read_object(SETTINGS_FILE, {}, "settings")
        names = (settings or {}).get(S.LABEL_NAMES_SETTING)
        if names is not None and (
            not isinstance(names, list)
            or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)
        ):
            path = self.location.join(SETTINGS_FILE)
            raise OutputError(
                f"{path}: damaged settings ('{S.LABEL_NAMES_SETTING}' is not a list of distinct names); "
                f"{RESTORE}"
            )
        return settings

    def write_json(self, name: str, data: Any) -> None:
        write_bytes_atomic(
            self.location,
            self.location.join(name),
            (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(),
        )

    # -- preparing a run
    def check_writable(self) -> None:
        """Create the output folders and prove a file can be committed there (then remove it)."""
        try:
            makedirs(self.location, self.data_path())
            probe = self.location.join(".write-probe")
            write_bytes_atomic(self.location, probe, b"")
            self.location.fs.delete_file(probe)
        except OSError as exc:
            raise OutputError(f"{self.uri}: output is not writable ({exc.strerror or exc})") from None

    def prepare(self, keep: tuple[str, ...] = ()) -> int:
        """Remove what crashed runs left (temporaries, staged work, a shard's companion committed
        without its shard); returns how many temporaries and companions.

        Only temporaries of files this tool writes: at the top, those of :data:`OWN_FILES`; below, those
        in the folders it writes (:data:`OWN_DIRS`, its own store's parts aside: the store cleans its own).
        Never one of ``keep`` (the run's inputs), never by its name alone anywhere else."""
        self.remove_work()
        top = {self.location.join(name) for name in OWN_FILES}
        removed = remove_temporaries(self.location, self.location.path, recursive=False, only=top, keep=keep)
        for name in OWN_DIRS:
            if name not in (STORE_DIR, WORK_DIR):
                removed += remove_temporaries(self.location, self.location.join(name), keep=keep)
        return removed + self.format.remove_uncommitted()

    def work_path(self, run_id: str, *parts: str) -> str:
        return self.location.join(WORK_DIR, run_id, *parts)

    def remove_work(self, run_id: str | None = None) -> None:
        """Delete staged work of ``run_id`` (or of every run: crashed runs leave theirs behind)."""
        path = self.location.join(WORK_DIR, run_id) if run_id else self.location.join(WORK_DIR)
        remove_tree(self.location, path)

    # -- damaged files
    def find_damaged(
        self, paths: list[str], key_column: str, location: Location | None = None
    ) -> list[Damaged]:
        """The Parquet files among ``paths`` that :func:`~.formats.check_parquet` rejects."""
        from .formats import check_parquet

        where = location or self.location
        return find_damaged(where, paths, lambda path: check_parquet(where, path, key_column))

    def refuse_damaged_shards(self, then: str) -> None:
        """Refuse (one line) an output with a damaged shard, for a command that only reads its shards:
        the first one and how many more, then ``then`` (what to do)."""
        damaged = self.format.find_damaged()
        if damaged:
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            raise OutputError(
                f"{damaged[0].path}: damaged shard ({one_line(damaged[0].reason)}){more}; {then}"
            )

    def quarantine(self, damaged: Damaged, run_id: str, location: Location | None = None) -> str:
        """Move a damaged file to ``quarantine/<run>/`` (never deleted): beside the output's own files, or
        inside the store's folder for a store outside the output. Returns where it went."""
        where = location or self.location
        relative = posixpath.relpath(damaged.path, where.path)
        target = where.join(QUARANTINE_DIR, run_id, relative)
        move_aside(where, damaged.path, target)
        write_bytes_atomic(where, target + ".reason.txt", (damaged.reason + "\n").encode())
        return target

    def quarantine_shard(self, damaged: Damaged, run_id: str) -> str:
        """Move a damaged shard and its companions (a tar's key index) aside; returns where the shard went."""
        target = self.quarantine(damaged, run_id)
        for path in self.format.companions(damaged.path):
            if is_file(self.location, path):
                self.quarantine(Damaged(path, f"committed with {damaged.path}: {damaged.reason}"), run_id)
        return target

    # -- shards and failures
    def shard_files(self) -> list[str]:
        return self.format.shard_files()

    def committed_keys(self) -> set[str]:
        """Keys of every readable shard (damaged ones are ``verify``'s and ``generate``'s business)."""
        return self.format.committed_keys()

    def failure_files(self) -> list[str]:
        return list_files(self.location, self.location.join(FAILURES_DIR), suffix=".parquet")

    def write_failures(self, table: pa.Table, name: str) -> None:
        write_parquet_atomic(
            self.location, self.location.join(FAILURES_DIR, name), table.cast(S.failure_schema())
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

    # -- the plan
    def write_plan_part(self, run_id: str, table: pa.Table, name: str) -> None:
        write_parquet_atomic(
            self.location,
            self.location.join(PLAN_DIR, run_id, name),
            table.cast(S.plan_schema(S.LABEL in table.column_names)),
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
        for info in self.location.fs.get_file_info(
            fs.FileSelector(self.location.join(PLAN_DIR), allow_not_found=True)
        ):
            if info.type == fs.FileType.Directory and info.base_name not in keep:
                remove_tree(self.location, info.path)

    def plan_pointer(self, name: str = PLAN_POINTER_FILE) -> dict[str, Any] | None:
        data = self.read_object(name, {"run": str, "images": int}, "plan pointer", RECREATE)
        if data is not None and not data["run"].isalnum():
            raise OutputError(
                f"{self.location.join(name)}: damaged plan pointer (run {data['run']!r}); {RECREATE}"
            )
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
        schema = S.plan_schema()
        return pa.concat_tables(tables) if tables else schema.empty_table().select(columns or schema.names)


def open_output(uri: str) -> OutputDataset:
    """An existing output, for the inspection commands: refuses a folder that is not one (one line), and
    damaged metadata (one line naming the file)."""
    output = OutputDataset(uri)
    if not any(is_file(output.location, output.location.join(name)) for name in (MARKER_FILE, SETTINGS_FILE)):
        raise OutputError(f"{output.uri}: not a pixart-batch output (no {MARKER_FILE} or {SETTINGS_FILE})")
    output.validate_metadata()
    return output


def store_location(output: OutputDataset) -> Location | None:
    """Where the output's embedding store is (``store.json``; a relative pointer is inside the output)."""
    pointer = output.read_object(
        STORE_POINTER_FILE, {"uri": str}, "store pointer", "delete it and re-run generate"
    )
    if pointer is None:
        return None
    uri = pointer["uri"]
    if "://" in uri or uri.startswith("/"):
        return locate(uri)
    if ".." in uri.split("/"):
        raise OutputError(
            f"{output.location.join(STORE_POINTER_FILE)}: damaged store pointer (leaves the output); "
            "restore it"
        )
    return output.location.child(*uri.split("/"))
