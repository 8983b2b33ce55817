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

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import schema as S
from .errors import OutputError, UserError, first_line
from .expr import Column, Where, columns_of, parse_where
from .output import OutputDataset, open_output
from .output.formats import FORMATS, OutputFormat, in_lists
from .output.guard import EXPORT_SETTING, shard_settings
from .output.layout import CARD_FILE
from .output.relations import Place, not_inside_others
from .output.session import OutputSession, new_run_id
from .ownership import LOCK_FILE, MARKER_FILE, check_ours
from .progress import say
from .storage import TMP_NAME, Location, is_file, locate, makedirs

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Features

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
        text = (
            f"export: {self.rows_exported} of {self.rows_read} rows exported in {self.shards} "
            f"{self.format} shards"
        )
        if self.per_label is not None:
            text += (
                " (" + ", ".join(f"{name}: {count}" for name, count in sorted(self.per_label.items())) + ")"
            )
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


def export(
    source_uri: str,
    where: str,
    to: str,
    output_format: str | None = None,
    per_label: int | None = None,
    log: Callable[[str], None] = say,
) -> ExportResult:
    """Write the rows of ``source_uri`` that satisfy ``where`` (at most ``per_label`` per class) to the
    new dataset ``to`` in ``output_format`` (default: the source's); see the module's docstring."""
    source = _open_source(source_uri)
    name = output_format or source.format.name
    if name not in FORMATS:
        raise UserError(f"--format {name}: unknown format (formats: {', '.join(FORMATS)})")
    if per_label is not None and per_label < 1:
        raise UserError(f"--per-label {per_label}: give a number of rows of at least 1")
    if per_label is not None and S.LABEL not in source.columns:
        raise UserError(
            f"{source.output.uri}: --per-label needs a '{S.LABEL}' column, and this output's rows have none"
        )
    condition = parse_where(where, source.columns)
    location = _check_destination(source.output, to)
    result = ExportResult(source.output.uri, location.uri, name)
    picked, plan = _pick(source, condition, per_label, result)
    if not result.rows_exported:
        raise UserError(
            f"{source.output.uri}: no row satisfies --where {where!r} ({result.rows_read} rows read); "
            "nothing was written"
        )
    settings = {
        **source.settings,
        "output.format": name,
        EXPORT_SETTING: {"source": source.output.uri, "where": where, "per_label": per_label},
    }
    target = OutputDataset(location.uri, name)
    # A fresh session: the folder must still be new (or an export killed before it finished) under the
    # lock, and a failure empties it again; the session's order: settings, plan, data, card.
    with OutputSession(target, new_run_id(), fresh=True, takeover=unfinished_export, log=log) as session:
        session.write_settings(settings)
        _write_plan(source.output, target, session.run_id, plan)
        _copy(source, picked, target, session.run_id, settings, result)
        features = target.format.card_features(source.features)
        counts = {"prompts": len({row[S.PROMPT_ID] for row in plan}), "images_total": len(plan)}
        session.write_card(settings, counts, features)
    return result


def unfinished_export(output: OutputDataset) -> str | None:
    """Why ``output`` is an export that never finished (its card is written last), or a folder that a
    command killed right after marking it holds nothing else; None for anything else (a finished output)."""
    from pyarrow import fs

    settings = output.read_settings()
    if settings is None:
        names = {
            info.base_name
            for info in output.location.fs.get_file_info(
                fs.FileSelector(output.location.path, allow_not_found=True)
            )
        }
        left = {name for name in names if name not in (MARKER_FILE, LOCK_FILE) and not TMP_NAME.match(name)}
        return (
            None if left else "holds only the marker of a command that was stopped before it wrote anything"
        )
    if EXPORT_SETTING in settings and not is_file(output.location, output.location.join(CARD_FILE)):
        source = (
            settings[EXPORT_SETTING].get("source") if isinstance(settings[EXPORT_SETTING], dict) else None
        )
        return f"an export of {source} that was stopped before it finished"
    return None


# -- the source
def _open_source(uri: str) -> _Source:
    output = open_output(uri)
    shards = output.format.shard_files()
    if not shards:
        raise OutputError(f"{output.uri}: holds no images yet; nothing to export")
    output.refuse_damaged_shards(
        f"run `pixart-batch verify {output.uri}`, or re-run generate to set it aside and redo its images; "
        "nothing was written"
    )
    settings = output.read_settings() or shard_settings(output) or {}
    names = S.label_names(settings)
    labels = tuple(names) if names else None
    try:
        features = output.format.features(shards[0], labels)
    except Exception as exc:
        reason = first_line(exc, with_type=True)
        raise OutputError(f"{shards[0]}: unreadable shard ({reason}); nothing was written") from None
    label = features.get(S.LABEL)
    if labels is None and getattr(label, "names", None):
        labels = tuple(str(n) for n in label.names)
    columns = columns_of(
        {name: feature for name, feature in features.items() if name != S.IMAGE},
        {S.LABEL: list(labels)} if labels and S.LABEL in features else None,
    )
    return _Source(output, shards, settings, features, labels, columns)


# -- the destination
def _check_destination(source: OutputDataset, to: str) -> Location:
    """Refuse ``to`` inside the source, inside a folder another output writes, or a folder that is
    not new or empty (read-only); an export that was stopped before it finished is started again."""
    place, inside = Place.of(to), Place.of(source.uri)
    if place.inside(inside):
        raise OutputError(
            f"{place.uri}: lies inside the source output {inside.uri}; export to a folder outside it"
        )
    not_inside_others(place, "the export")
    location = locate(to)
    if check_ours(location) and unfinished_export(OutputDataset(location.uri)) is None:
        raise OutputError(
            f"{location.uri}: is a pixart-batch output already; export writes a new dataset: "
            "choose a new or empty directory"
        )
    return location


# -- pass 1: pick the keys
def _pick(
    source: _Source, condition: Where, per_label: int | None, result: ExportResult
) -> tuple[dict[int, dict[int, set[str]]], list[dict[str, Any]]]:
    """``{shard index: {group: keys}}`` of the rows to export (first come, first kept per class), and
    the export's plan rows (key, prompt id, image index, bucket, label)."""
    labelled = (S.LABEL,) if S.LABEL in source.columns else ()
    planned = (S.KEY, S.PROMPT_ID, S.IMAGE_INDEX, *_BUCKET, *labelled)
    columns = sorted({*planned, *condition.columns})
    kept: Counter = Counter()
    picked: dict[int, dict[int, set[str]]] = {}
    plan: list[dict[str, Any]] = []
    for index, path in enumerate(source.shards):
        try:
            for group, rows in source.format.row_groups(path, source.format.readable_columns(path, columns)):
                for row in rows:
                    result.rows_read += 1
                    if not condition.matches(row):
                        continue
                    label = row.get(S.LABEL)
                    if per_label is not None and (label is None or kept[label] >= per_label):
                        continue
                    kept[label] += 1
                    picked.setdefault(index, {}).setdefault(group, set()).add(row[S.KEY])
                    plan.append({name: row.get(name) for name in planned})
        except UserError:
            raise
        except Exception as exc:
            raise OutputError(
                f"{path}: unreadable shard ({first_line(exc, with_type=True)}); nothing was written"
            ) from None
    result.rows_exported = sum(kept.values())
    if S.LABEL in source.columns:
        result.per_label = {source.label_of(label): count for label, count in kept.items()}
    return picked, plan


# -- pass 2: copy the rows
def _copy(
    source: _Source,
    picked: dict[int, dict[int, set[str]]],
    target: OutputDataset,
    run_id: str,
    settings: dict[str, Any],
    result: ExportResult,
) -> None:
    """The picked rows, one export shard per source shard that has any, images as their stored bytes."""
    makedirs(target.location, target.data_path())
    schema = source.features.arrow_schema
    for index, groups in sorted(picked.items()):
        path = source.shards[index]
        writer = target.format.open_shard(
            target.format.shard_name(run_id, index, 0), settings, ROW_GROUP_SIZE, schema
        )
        try:
            columns = source.format.readable_columns(path, list(source.features))
            for batch in in_lists(source.format.rows_of_groups(path, groups, columns), BATCH_ROWS):
                writer.write(_table(batch, schema))
            writer.commit()
        except UserError:
            writer.abort()
            raise
        except Exception as exc:
            writer.abort()
            raise OutputError(
                f"{path}: unreadable shard ({first_line(exc, with_type=True)}); nothing was exported"
            ) from None
        except BaseException:
            writer.abort()
            raise
        result.shards += 1


_BUCKET = (S.BUCKET_WIDTH, S.BUCKET_HEIGHT)


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of ``schema`` (a column a row lacks is null; a sample's member name is not kept)."""
    import pyarrow as pa

    for row in rows:
        image = row.get(S.IMAGE)
        if isinstance(image, dict):
            row[S.IMAGE] = {"bytes": image.get("bytes"), "path": None}
    return pa.Table.from_pylist(rows, schema=schema)


def _write_plan(
    source: OutputDataset, target: OutputDataset, run_id: str, plan: list[dict[str, Any]]
) -> None:
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
                for batch in pq.ParquetFile(handle).iter_batches(
                    columns=[S.KEY, S.CAPTION_KEY, S.NEGATIVE_KEY]
                ):
                    for found in batch.to_pylist():
                        if found[S.KEY] in wanted:
                            wanted[found[S.KEY]].update(found)
    except Exception:
        pass  # an unreadable plan in the source: the export's plan lists its rows all the same
    target.write_plan_part(
        run_id, pa.Table.from_pylist(plan, schema=S.plan_schema(labelled)), "part-00000.parquet"
    )
    target.commit_plan(run_id, len(plan))
