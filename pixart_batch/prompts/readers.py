"""The prompt file readers, one per format, and the one registry of them by file suffix."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from pixart_batch.errors import first_line
from pixart_batch.parsing import DuplicateKeyError, loads_json

from .classes import iter_classes
from .columns import ROLES, ObjectFields, PromptSource, class_label, class_names, table_columns
from .fields import record_from_fields
from .flags import parse_prompt_line
from .ids import IdMaker
from .records import Entry, PromptRecord, fail, no_nul
from .source import Tally, decoded_lines, no_prompts, open_binary

if TYPE_CHECKING:
    import pyarrow as pa

_PARQUET_BATCH_ROWS = 8192
_PARQUET_READ_BYTES = 1 << 20

Reader = Callable[[str | os.PathLike[str], str, IdMaker, Tally, PromptSource], Iterator[Entry]]
"""``reader(path, name, ids, tally, source)``: the records of one file, in order, each with whether its id
was explicit (``source``: the columns a table's fields are read from)."""


def _iter_txt(
    path: str | os.PathLike[str],
    name: str,
    ids: IdMaker,
    tally: Tally,
    source: PromptSource,
) -> Iterator[Entry]:
    """Read a ``.txt`` file: one prompt per non-blank line, optional size flags."""
    saw_lines = found = False
    with open_binary(path, tally) as stream:
        for number, line in decoded_lines(stream, name):
            saw_lines = True
            text = line.strip()
            if not text:
                continue
            where = f"{name}:{number}"
            no_nul(line, "prompt text", where)  # here, so the character counts from the line start
            prompt, width, height, ratio = parse_prompt_line(text, where)
            prompt_id = ids.derive(text.encode("utf-8"))
            found = True
            yield PromptRecord(prompt_id, prompt, None, width, height, ratio, where), False
    if not found:
        no_prompts(name, saw_lines)


def _iter_jsonl(
    path: str | os.PathLike[str],
    name: str,
    ids: IdMaker,
    tally: Tally,
    source: PromptSource,
) -> Iterator[Entry]:
    """Read a ``.jsonl``/``.ndjson`` file: one JSON object per non-blank line."""
    saw_lines = found = False
    keys = ObjectFields(source)
    names = source.columns()
    with open_binary(path, tally) as stream:
        for number, line in decoded_lines(stream, name):
            saw_lines = True
            if not line.strip():
                continue
            where = f"{name}:{number}"
            try:
                obj = loads_json(line.rstrip())  # rstrip: columns count from the line start
            except DuplicateKeyError as exc:
                fail(where, exc.message)
            except json.JSONDecodeError as exc:
                fail(where, f"not valid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                fail(where, "JSON nested too deeply (arrays/objects inside each other) to read")
            except ValueError as exc:  # an integer of thousands of digits
                fail(where, f"cannot read JSON ({first_line(exc, limit=200).split(';')[0]})")
            if not isinstance(obj, dict):
                got = type(obj).__name__
                fail(where, f"expected a JSON object with a {source.prompt_column!r} key, got {got}")
            found = True
            yield record_from_fields(keys.fields(obj, where), where, ids, names)
    if not found:
        no_prompts(name, saw_lines)
    keys.finish(name)


def _iter_csv(
    path: str | os.PathLike[str],
    name: str,
    ids: IdMaker,
    tally: Tally,
    source: PromptSource,
) -> Iterator[Entry]:
    """Read a ``.csv`` file with a header row; errors name the line a row starts on."""
    found = False
    names = source.columns()
    with open_binary(path, tally) as stream:
        lines = (line for _, line in decoded_lines(stream, name))
        reader = csv.reader(lines, strict=True, skipinitialspace=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                fail(name, "no prompts (file is empty)")
            columns = [column.strip() for column in header]
            known = [(columns.index(column), field) for field, column in table_columns(source, columns, name)]
            start = reader.line_num + 1
            for row in reader:
                where = f"{name}:{start}"
                if any(cell.strip() for cell in row):
                    if len(row) != len(columns):
                        fail(where, f"row has {len(row)} fields but the header has {len(columns)}")
                    fields = {f: row[i] if f == "prompt" or row[i].strip() else None for i, f in known}
                    found = True
                    yield record_from_fields(fields, where, ids, names)
                start = reader.line_num + 1
        except csv.Error as exc:
            fail(f"{name}:{start}", f"malformed CSV ({exc})")
    if not found:
        fail(name, "no prompts (no rows after the header)")


class TableRows:
    """Records from Arrow record batches (Parquet, a ``datasets`` folder's Arrow files) through a mapping:
    ``where(row)`` names a 1-based row; a ``ClassLabel`` label column gives its class names."""

    def __init__(self, source: PromptSource, schema: pa.Schema, name: str, ids: IdMaker) -> None:
        self.schema = schema
        self.pairs = table_columns(source, schema.names, name)
        self.columns = list(dict.fromkeys(column for _, column in self.pairs))
        self.classes = class_names(schema.metadata, source.label_column)
        self.names = source.columns()
        self.name, self.ids, self.rows = name, ids, 0

    def entries(self, batch: pa.RecordBatch, where: Callable[[int], str]) -> Iterator[Entry]:
        """The records of ``batch`` (read :data:`_PARQUET_BATCH_ROWS` rows at a time into Python)."""
        label_column = self.names["label"]
        for offset in range(0, batch.num_rows, _PARQUET_BATCH_ROWS):
            piece = batch.slice(offset, _PARQUET_BATCH_ROWS)
            values = [piece.column(column).to_pylist() for _, column in self.pairs]
            for cells in zip(*values, strict=True):
                self.rows += 1
                at = where(self.rows)
                fields = dict(zip((field for field, _ in self.pairs), cells, strict=True))
                if self.classes is not None:
                    fields["label"] = class_label(fields.get("label"), self.classes, label_column, at)
                yield record_from_fields(fields, at, self.ids, self.names)


def _iter_parquet(
    path: str | os.PathLike[str],
    name: str,
    ids: IdMaker,
    tally: Tally,
    source: PromptSource,
) -> Iterator[Entry]:
    """Read a ``.parquet`` file batch by batch; errors name the 1-based row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_binary(path, tally, seekable=True) as stream:
        try:
            # buffered, not pre-buffered: a column chunk is read 1 MiB at a time, never whole (flat memory
            # however large the row group)
            parquet = pq.ParquetFile(stream, buffer_size=_PARQUET_READ_BYTES, pre_buffer=False)
        except (pa.ArrowException, OSError) as exc:
            fail(name, f"not a readable Parquet file ({first_line(exc, limit=200)})")
        table = TableRows(source, parquet.schema_arrow, name, ids)
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=table.columns)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                problem = f"cannot read Parquet data ({first_line(exc, limit=200)})"
                fail(f"{name}:row {table.rows + 1}", problem)
            if batch is None:
                break
            yield from table.entries(batch, lambda row: f"{name}:row {row}")
    if table.rows == 0:
        fail(name, "no prompts (file has no rows)")


def _iter_class_file(
    path: str | os.PathLike[str],
    name: str,
    ids: IdMaker,
    tally: Tally,
    source: PromptSource,
) -> Iterator[Entry]:
    return iter_classes(path, name, ids, tally)


READERS: dict[str, Reader] = {
    ".txt": _iter_txt,
    ".jsonl": _iter_jsonl,
    ".ndjson": _iter_jsonl,
    ".csv": _iter_csv,
    ".parquet": _iter_parquet,
    ".yaml": _iter_class_file,
    ".yml": _iter_class_file,
}
"""The prompt formats: one reader per file suffix (matched case-insensitively). A new format is one
reader here and one entry."""

SUPPORTED_EXTENSIONS = tuple(READERS)
"""File extensions :func:`read_entries` understands (matched case-insensitively)."""
TABLE_EXTENSIONS = (".jsonl", ".ndjson", ".csv", ".parquet")
"""The tables: their fields are read from columns (``--prompt-column`` and the like), and a folder's
files of these kinds are read as one source."""
CLASS_EXTENSIONS = (".yaml", ".yml")


def suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def read_entries(
    path: str | os.PathLike[str],
    ids: IdMaker,
    tally: Tally,
    source: PromptSource | None = None,
) -> Iterator[Entry]:
    """Pick the reader for ``path`` by extension (raising now for an unknown one, or for column flags on a
    file that has no columns); it reads through ``tally``."""
    name = os.fsdecode(path)
    source = source or PromptSource(name)
    extension = suffix(name)
    reader = READERS.get(extension)
    if reader is None:
        fail(
            name,
            f"unsupported prompt file type {extension or '(no extension)'!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    mapped = source.mapped()
    if mapped and extension not in TABLE_EXTENSIONS:
        flag = ROLES[next(iter(mapped))]
        tables = ", ".join(TABLE_EXTENSIONS)
        fail(name, f"{flag} applies to tables ({tables}, datasets folders), not a {extension} file")
    return reader(path, name, ids, tally, source)
