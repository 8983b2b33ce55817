"""``pixart-batch export OUTPUT --where EXPR --to DIR``: the rows of an output that satisfy an expression
(:mod:`pixart_batch.expr`), at most ``--per-label`` per class, as a new self-contained dataset.

The export is a pixart-batch output of its own (marker, ``settings.json``, a plan listing exactly its
rows, the Hub card), so ``load_dataset(DIR)``, ``status`` and ``verify`` read it. Its settings are the
source's plus ``"export": {"source", "where", "per_label"}``.

Two streaming passes over the source's shards, in sorted order: the first reads only the columns the
expression names (Parquet: row group by row group; WebDataset: one sample at a time) and picks the keys;
the second copies the picked rows, images as their stored bytes (never decoded), one export shard per
source shard that has any. The source is only read: nothing there is written, locked or moved.
Everything that can be refused (the source, damaged shards, the expression, ``DIR``, no row matching)
is refused before anything is written; a failure while writing removes what the export wrote.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import schema as S
from .errors import OutputError, UserError, first_line, one_line
from .expr import Column, Where, columns_of, parse_where
from .output import OutputDataset, open_output
from .output.card import write_card
from .output.formats import FORMATS, OutputFormat
from .output.guard import shard_settings
from .output.relations import Place, not_inside_others
from .ownership import OutputLock, check_ours, write_marker
from .storage import Location, locate, makedirs, remove_tree

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Features

EXPORT_SETTING = "export"
ROW_GROUP_SIZE = 100
BATCH_ROWS = 32
"""Rows held at a time while copying (images included)."""


@dataclass
class ExportResult:
    """What an export read and wrote."""

    source: str
    path: str
    format: str
    rows_read: int = 0
    rows_exported: int = 0
    shards: int = 0
    per_label: dict[str, int] | None = None
    """Exported rows per class (None when the source has no label column)."""

    def summary(self) -> str:
        text = f"export: {self.rows_exported} of {self.rows_read} rows exported in {self.shards} {self.format} shards"
        if self.per_label is not None:
            text += " (" + ", ".join(f"{name}: {count}" for name, count in sorted(self.per_label.items())) + ")"
        return f"{text} -> {self.path}"


@dataclass
class _Source:
    """The source output as the export reads it."""

    output: OutputDataset
    shards: list[str]
    settings: dict[str, Any]
    features: Features
    labels: tuple[str, ...] | None = None
    """The label column's class names (None: no label column, or one without names)."""
    columns: dict[str, Column] = field(default_factory=dict)

    @property
    def format(self) -> OutputFormat:
        return self.output.format

    def label_of(self, value: Any) -> str:
        if self.labels is not None and isinstance(value, int) and 0 <= value < len(self.labels):
            return self.labels[value]
        return str(value)


def export(source_uri: str, where: str, to: str, output_format: str | None = None, per_label: int | None = None) -> ExportResult:
    """Write the rows of ``source_uri`` that satisfy ``where`` (at most ``per_label`` per class) to the
    new dataset ``to`` in ``output_format`` (default: the source's); see the module's docstring."""
    source = _open_source(source_uri)
    name = output_format or source.format.name
    if name not in FORMATS:
        raise UserError(f"--format {name}: unknown format (formats: {', '.join(FORMATS)})")
    if per_label is not None and per_label < 1:
        raise UserError(f"--per-label {per_label}: give a number of rows of at least 1")
    if per_label is not None and S.LABEL not in source.columns:
        raise UserError(f"{source.output.uri}: --per-label needs a '{S.LABEL}' column, and this output's rows have none")
    condition = parse_where(where, source.columns)
    target = _check_destination(source.output, to)
    result = ExportResult(source.output.uri, target.uri, name)
    picked = _pick(source, condition, per_label, result)
    if not result.rows_exported:
        raise UserError(
            f"{source.output.uri}: no row satisfies --where {where!r} ({result.rows_read} rows read); nothing was written"
        )
    settings = {
        **source.settings,
        "output.format": name,
        EXPORT_SETTING: {"source": source.output.uri, "where": where, "per_label": per_label},
    }
    _write(source, picked, target, name, settings, result)
    return result


# -- the source
def _open_source(uri: str) -> _Source:
    output = open_output(uri)
    shards = output.format.shard_files()
    if not shards:
        raise OutputError(f"{output.uri}: holds no images yet; nothing to export")
    damaged = output.format.find_damaged()
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise OutputError(
            f"{damaged[0].path}: damaged shard ({one_line(damaged[0].reason)}){more}; "
            f"run `pixart-batch verify {output.uri}`, or re-run generate to set it aside and redo its images; nothing was written"
        )
    settings = output.read_settings() or shard_settings(output) or {}
    names = S.label_names(settings)
    labels = tuple(names) if names else None
    features = _features(output, shards[0], labels)
    label = features.get(S.LABEL)
    if labels is None and getattr(label, "names", None):
        labels = tuple(str(n) for n in label.names)
    columns = columns_of(
        {name: feature for name, feature in features.items() if name != S.IMAGE},
        {S.LABEL: list(labels)} if labels and S.LABEL in features else None,
    )
    return _Source(output, shards, settings, features, labels, columns)


def _features(output: OutputDataset, first_shard: str, labels: tuple[str, ...] | None) -> Features:
    """The ``datasets`` features of the source's rows: a Parquet shard's own (its ``huggingface``
    metadata, or its Arrow schema), else a run's columns plus what the first sample carries beyond them."""
    import pyarrow.parquet as pq
    from datasets import ClassLabel, Features, Value

    try:
        if output.format.name == "parquet":
            with output.location.fs.open_input_file(first_shard) as handle:
                own = Features.from_arrow_schema(pq.ParquetFile(handle).schema_arrow)
            run = S.features()  # columns added since older shards were written: read as missing there
            added = {name: run[name] for name in S.ADDED_COLUMNS if name not in own}
            image = {S.IMAGE: own[S.IMAGE]} if S.IMAGE in own else {}
            return Features({**{k: v for k, v in own.items() if k != S.IMAGE}, **added, **image})
        first = next(output.format.read_rows(first_shard), {})
    except Exception as exc:
        raise OutputError(f"{first_shard}: unreadable shard ({first_line(exc, with_type=True)}); nothing was written") from None
    found = dict(S.features())
    for name, value in first.items():
        if name in found:
            continue
        if name == S.LABEL and labels and isinstance(value, int):
            found[name] = ClassLabel(names=list(labels))
        elif name in (S.CLIP_SCORE, S.AESTHETIC_SCORE):
            found[name] = Value("float32")
        elif isinstance(value, (bool, int, float, str)):
            kinds = {bool: "bool", int: "int64", float: "float64", str: "string"}
            found[name] = Value(kinds[type(value)])
    return Features(found)


# -- the destination
def _check_destination(source: OutputDataset, to: str) -> Location:
    """Refuse ``to`` inside the source, inside a folder another output writes, or a folder that is
    not new or empty (read-only)."""
    place, inside = Place.of(to), Place.of(source.uri)
    if place.inside(inside):
        raise OutputError(f"{place.uri}: lies inside the source output {inside.uri}; export to a folder outside it")
    not_inside_others(place, "the export")
    location = locate(to)
    if check_ours(location):
        raise OutputError(
            f"{location.uri}: is a pixart-batch output already; export writes a new dataset: choose a new or empty directory"
        )
    return location


# -- pass 1: pick the keys
def _pick(source: _Source, condition: Where, per_label: int | None, result: ExportResult) -> dict[int, dict[int, set[str]]]:
    """``{shard index: {group: keys}}`` of the rows to export (first come, first kept per class)."""
    columns = sorted({S.KEY, *condition.columns, *([S.LABEL] if S.LABEL in source.columns else [])})
    kept: Counter = Counter()
    picked: dict[int, dict[int, set[str]]] = {}
    for index, path in enumerate(source.shards):
        try:
            for group, rows in source.format.row_groups(path, _present(source, path, columns)):
                for row in rows:
                    result.rows_read += 1
                    if not condition.matches(row):
                        continue
                    label = row.get(S.LABEL)
                    if per_label is not None and (label is None or kept[label] >= per_label):
                        continue
                    kept[label] += 1
                    picked.setdefault(index, {}).setdefault(group, set()).add(row[S.KEY])
        except UserError:
            raise
        except Exception as exc:
            raise OutputError(f"{path}: unreadable shard ({first_line(exc, with_type=True)}); nothing was written") from None
    result.rows_exported = sum(kept.values())
    if S.LABEL in source.columns:
        result.per_label = {source.label_of(label): count for label, count in kept.items()}
    return picked


def _present(source: _Source, path: str, columns: list[str]) -> list[str]:
    """The ``columns`` a Parquet shard holds (a shard written before a column existed lacks it: its rows
    read it as missing); every column for other formats (a sample's JSON has what it has)."""
    if source.format.name != "parquet":
        return columns
    import pyarrow.parquet as pq

    with source.output.location.fs.open_input_file(path) as handle:
        names = set(pq.ParquetFile(handle).schema_arrow.names)
    return [name for name in columns if name in names]


# -- pass 2: copy the rows
def _write(
    source: _Source,
    picked: dict[int, dict[int, set[str]]],
    location: Location,
    name: str,
    settings: dict[str, Any],
    result: ExportResult,
) -> None:
    from pyarrow import fs

    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + uuid.uuid4().hex[:6]
    existed = location.fs.get_file_info(location.path).type == fs.FileType.Directory
    lock = OutputLock(location, run_id).acquire()
    try:
        if check_ours(location):  # another export got here first
            raise OutputError(f"{location.uri}: is a pixart-batch output already; choose a new or empty directory")
        target = OutputDataset(location.uri, name)
        makedirs(location, target.data_path())
        schema = source.features.arrow_schema
        plan: list[dict[str, Any]] = []
        labelled = (S.LABEL,) if S.LABEL in source.features else ()  # the plan counts images per label (card, status)
        for index, groups in sorted(picked.items()):
            path = source.shards[index]
            writer = target.format.open_shard(target.format.shard_name(run_id, index, 0), settings, ROW_GROUP_SIZE, schema)
            try:
                columns = _present(source, path, list(source.features))
                for batch in _batches(source.format.rows_of_groups(path, groups, columns)):
                    writer.write(_table(batch, schema))
                    plan += [{c: row.get(c) for c in (S.KEY, S.PROMPT_ID, S.IMAGE_INDEX, *_BUCKET, *labelled)} for row in batch]
                writer.commit()
            except UserError:
                writer.abort()
                raise
            except Exception as exc:
                writer.abort()
                raise OutputError(f"{path}: unreadable shard ({first_line(exc, with_type=True)}); nothing was exported") from None
            result.shards += 1
        _write_plan(source.output, target, run_id, plan)
        target.write_json("settings.json", settings)
        features = _card_features(source.features) if name == "parquet" else None
        prompts = len({row[S.PROMPT_ID] for row in plan})
        write_card(target, settings, {"prompts": prompts, "images_total": len(plan)}, features=features)
        write_marker(location)
    except BaseException:
        lock.release()
        _remove_written(location, existed)
        raise
    lock.release()


_BUCKET = (S.BUCKET_WIDTH, S.BUCKET_HEIGHT)


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of ``schema`` (a column a row lacks is null; a sample's member name is not kept)."""
    import pyarrow as pa

    for row in rows:
        image = row.get(S.IMAGE)
        if isinstance(image, dict):
            row[S.IMAGE] = {"bytes": image.get("bytes"), "path": None}
    return pa.Table.from_pylist(rows, schema=schema)


def _write_plan(source: OutputDataset, target: OutputDataset, run_id: str, plan: list[dict[str, Any]]) -> None:
    """The export's plan: exactly its rows, with the source's caption keys where its plan has them
    (streamed; the export holds no embedding store, so ``status`` counts none embedded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = {row[S.KEY]: row for row in plan}
    labelled = any(S.LABEL in row for row in plan)
    for row in plan:
        row[S.CAPTION_KEY] = row[S.NEGATIVE_KEY] = ""
        if labelled:
            row.setdefault(S.TEMPLATE, -1)
    try:
        for path in source.plan_files():
            with source.location.fs.open_input_file(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(columns=[S.KEY, S.CAPTION_KEY, S.NEGATIVE_KEY]):
                    for found in batch.to_pylist():
                        if found[S.KEY] in wanted:
                            wanted[found[S.KEY]].update(found)
    except Exception:
        pass  # an unreadable plan in the source: the export's plan lists its rows all the same
    target.write_plan_part(run_id, pa.Table.from_pylist(plan, schema=S.plan_schema(labelled)), "part-00000.parquet")
    target.commit_plan(run_id, len(plan))


def _card_features(features: Features) -> list[dict[str, Any]]:
    """The card's ``dataset_info.features`` entries of the exported rows (class labels with their names)."""
    entries: list[dict[str, Any]] = []
    for name, feature in features.items():
        inner = getattr(feature, "feature", None)
        names = getattr(feature, "names", None)
        if name == S.IMAGE or type(feature).__name__ == "Image":
            entries.append({"name": name, "dtype": "image"})
        elif names is not None:
            entries.append({"name": name, "dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(names)}}}})
        elif inner is not None:
            entries.append({"name": name, "list": inner.dtype})
        else:
            entries.append({"name": name, "dtype": feature.dtype})
    return entries


def _remove_written(location: Location, existed: bool) -> None:
    """Undo a failed export: ``DIR`` back to new (or empty, the lock file aside)."""
    from pyarrow import fs

    from .ownership import LOCK_FILE

    try:
        if not existed:
            remove_tree(location, location.path)
            return
        for info in location.fs.get_file_info(fs.FileSelector(location.path, allow_not_found=True)):
            if info.base_name == LOCK_FILE:
                continue
            if info.type == fs.FileType.Directory:
                remove_tree(location, info.path)
            else:
                location.fs.delete_file(info.path)
    except OSError:
        pass
