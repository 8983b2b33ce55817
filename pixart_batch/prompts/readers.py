"""The prompt file readers, one per format, and the one registry of them by file suffix."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator

from pixart_batch.errors import first_line
from pixart_batch.parsing import DuplicateKeyError, loads_json

from .classes import iter_classes
from .fields import TABLE_COLUMNS, columns_or_fail, record_from_fields
from .flags import parse_prompt_line
from .ids import IdMaker
from .records import Entry, PromptRecord, fail, no_nul
from .source import Tally, decoded_lines, no_prompts, open_binary

_PARQUET_BATCH_ROWS = 8192

Reader = Callable[[str | os.PathLike[str], str, IdMaker, Tally], Iterator[Entry]]
"""``reader(path, name, ids, tally)``: the records of one file, in order, each with whether its id was explicit."""


def _iter_txt(path: str | os.PathLike[str], name: str, ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """Read a ``.txt`` file: one prompt per non-blank line, optional size flags."""
    saw_lines = found = False
    with open_binary(path, tally) as stream:
        for number, line in decoded_lines(stream, name):
            saw_lines = True
            text = line.strip()
            if not text:
                continue
            source = f"{name}:{number}"
            no_nul(line, "prompt text", source)  # here, so the character counts from the line start
            prompt, width, height, ratio = parse_prompt_line(text, source)
            prompt_id = ids.derive(text.encode("utf-8"))
            found = True
            yield PromptRecord(prompt_id, prompt, None, width, height, ratio, source), False
    if not found:
        no_prompts(name, saw_lines)


def _iter_jsonl(path: str | os.PathLike[str], name: str, ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """Read a ``.jsonl``/``.ndjson`` file: one JSON object per non-blank line."""
    saw_lines = found = False
    with open_binary(path, tally) as stream:
        for number, line in decoded_lines(stream, name):
            saw_lines = True
            if not line.strip():
                continue
            source = f"{name}:{number}"
            try:
                obj = loads_json(line.rstrip())  # rstrip: columns count from the line start
            except DuplicateKeyError as exc:
                fail(source, exc.message)
            except json.JSONDecodeError as exc:
                fail(source, f"not valid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                fail(source, "JSON nested too deeply (arrays/objects inside each other) to read")
            except ValueError as exc:  # an integer of thousands of digits
                fail(source, f"cannot read JSON ({first_line(exc, limit=200).split(';')[0]})")
            if not isinstance(obj, dict):
                fail(source, f"expected a JSON object with a 'prompt' key, got {type(obj).__name__}")
            found = True
            yield record_from_fields(obj, source, ids)
    if not found:
        no_prompts(name, saw_lines)


def _iter_csv(path: str | os.PathLike[str], name: str, ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """Read a ``.csv`` file with a header row; errors name the line a row starts on."""
    found = False
    with open_binary(path, tally) as stream:
        lines = (line for _, line in decoded_lines(stream, name))
        reader = csv.reader(lines, strict=True, skipinitialspace=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                fail(name, "no prompts (file is empty)")
            columns = [column.strip() for column in header]
            columns_or_fail(columns, name)
            known = [(i, c) for i, c in enumerate(columns) if c in TABLE_COLUMNS]
            start = reader.line_num + 1
            for row in reader:
                source = f"{name}:{start}"
                if any(cell.strip() for cell in row):
                    if len(row) != len(columns):
                        fail(source, f"row has {len(row)} fields but the header has {len(columns)}")
                    fields = {c: row[i] if c == "prompt" or row[i].strip() else None for i, c in known}
                    found = True
                    yield record_from_fields(fields, source, ids)
                start = reader.line_num + 1
        except csv.Error as exc:
            fail(f"{name}:{start}", f"malformed CSV ({exc})")
    if not found:
        fail(name, "no prompts (no rows after the header)")


def _iter_parquet(path: str | os.PathLike[str], name: str, ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """Read a ``.parquet`` file batch by batch; errors name the 1-based row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    with open_binary(path, tally, seekable=True) as stream:
        try:
            parquet = pq.ParquetFile(stream)
        except (pa.ArrowException, OSError) as exc:
            fail(name, f"not a readable Parquet file ({first_line(exc, limit=200)})")
        columns = parquet.schema_arrow.names
        columns_or_fail(columns, name)
        known = [c for c in TABLE_COLUMNS if c in columns]
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=known)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                fail(f"{name}:row {row + 1}", f"cannot read Parquet data ({first_line(exc, limit=200)})")
            if batch is None:
                break
            values = [batch.column(c).to_pylist() for c in known]
            for cells in zip(*values, strict=True):
                row += 1
                yield record_from_fields(dict(zip(known, cells, strict=True)), f"{name}:row {row}", ids)
    if row == 0:
        fail(name, "no prompts (file has no rows)")


READERS: dict[str, Reader] = {
    ".txt": _iter_txt,
    ".jsonl": _iter_jsonl,
    ".ndjson": _iter_jsonl,
    ".csv": _iter_csv,
    ".parquet": _iter_parquet,
    ".yaml": iter_classes,
    ".yml": iter_classes,
}
"""The prompt formats: one reader per file suffix (matched case-insensitively). A new format is one
reader here and one entry."""

SUPPORTED_EXTENSIONS = tuple(READERS)
"""File extensions :func:`read_entries` understands (matched case-insensitively)."""


def read_entries(path: str | os.PathLike[str], ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """Pick the reader for ``path`` by extension (raising now for an unknown one); it reads through ``tally``."""
    name = os.fsdecode(path)
    extension = os.path.splitext(name)[1].lower()
    reader = READERS.get(extension)
    if reader is None:
        fail(
            name,
            f"unsupported prompt file type {extension or '(no extension)'!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    return reader(path, name, ids, tally)
