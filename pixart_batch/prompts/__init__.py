"""Read prompt files (``.txt``, ``.jsonl``/``.ndjson``, ``.csv``, ``.parquet``) into records.

Every prompt becomes a :class:`PromptRecord` with a stable, file-unique id.
Anything wrong with a file is raised as a one-line
:class:`~pixart_batch.errors.PromptFileError` that starts with the file path
as given and, where there is one, the line (``FILE:LINE: ...``) or table row
(``FILE:row N: ...``).

Size requests
    ``.txt`` lines may end with PixArt-style size flags: ``--ar h:w`` or
    ``--aspect_ratio h:w`` (an aspect ratio, height:width; positive numbers)
    or ``--hw h:w`` (an exact size: height and width in pixels; positive
    integers).  The flags and the whitespace around them are removed from the
    prompt text.  The ``prompt`` of a ``.jsonl``/``.csv``/``.parquet`` row is
    parsed the same way; those rows may instead carry ``width`` and
    ``height`` (together) or ``aspect_ratio`` (an ``"h:w"`` string), but not
    both kinds, and not together with flags.  Exact sizes are at most
    2147483647 pixels per side (what the model supports is checked later).

Ids
    An explicit ``id`` (field or column; a JSON integer is turned into text)
    must be 1-128 characters from ``[A-Za-z0-9_-]``, because ids become keys
    of the output.  A row without one gets ``"p" + sha256(key)[:16]``, where
    the key is the prompt text as written (flags included, surrounding
    whitespace stripped) followed by ``" --hw h:w"`` / ``" --ar h:w"`` for
    size columns and ``"\\0" + negative_prompt`` when a negative prompt is
    given.  A ``.txt`` line therefore hashes its own stripped text, the same
    prompt gets the same id in every format, and inserting or appending
    prompts leaves existing ids alone.  The 2nd, 3rd, ... occurrence of an
    identical key gets ``-1``, ``-2``, ... appended.

    No text field (prompt, negative prompt, id) may contain a NUL character,
    so the ``"\\0"`` separator cannot occur in the text and different prompts
    always get different keys.

Empty values
    In ``.csv`` an empty cell means "not given" (CSV has no null).  In
    ``.jsonl`` and ``.parquet`` a null (or missing key) means "not given",
    while an empty ``negative_prompt`` string is an explicit empty negative
    prompt.

Files
    UTF-8; a leading byte-order mark is ignored.  Only regular files (a symlink
    to one is fine) and object-store objects are read: a FIFO, directory,
    device or socket is refused before it is opened.  :func:`scan_prompts`
    records a fingerprint of the bytes it read (:class:`PromptFingerprint`);
    :func:`iter_prompts` refuses a file whose bytes are not the same ones.

Sources and columns
    ``--prompts`` (a :class:`PromptSource`'s ``path``) may also be a folder written by ``datasets``'
    ``save_to_disk`` (its Arrow files streamed), a folder of tables (``.parquet``/``.jsonl``/``.csv``:
    a hub repository's snapshot), a glob (``*`` in the last part), ``s3://``/``gs://``, or a hub
    dataset ``hf://datasets/ORG/NAME[/path]`` (:mod:`.hub`; offline: an error naming the cached
    copy). A table's fields may come from other columns (:class:`PromptSource`'s ``prompt_column``,
    ``id_column``, ``label_column``, ``negative_prompt_column``); ids are derived from the values
    exactly as when the columns carry the default names.

Modules: :mod:`.records` (the record, the error helper), :mod:`.flags` (size flags),
:mod:`.ids` (stable ids, duplicate-id errors), :mod:`.fields` (row validation), :mod:`.source`
(file access through :mod:`pixart_batch.storage`, fingerprints), :mod:`.readers` (one reader per
format, one registry by suffix), :mod:`.columns` (the source and its column mapping), :mod:`.folders`
(``datasets`` folders, folders of tables, globs), :mod:`.hub` (``hf://datasets/...``) and :mod:`.scan`
(the streaming passes).
"""

from __future__ import annotations

from .columns import PromptSource
from .flags import parse_prompt_line
from .readers import SUPPORTED_EXTENSIONS
from .records import PromptRecord
from .scan import Prompts, PromptScan, count_records, iter_prompts, read_prompts, scan_prompts
from .source import PromptFingerprint

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "PromptFingerprint",
    "PromptRecord",
    "PromptScan",
    "PromptSource",
    "Prompts",
    "count_records",
    "iter_prompts",
    "parse_prompt_line",
    "read_prompts",
    "scan_prompts",
]
