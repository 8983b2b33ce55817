"""Prompt sources of several files: a ``datasets`` folder (``Dataset.save_to_disk``), a folder of tables,
a glob; and the one entry point that tells them from a single prompt file (:func:`read_source`).

- **A ``datasets`` folder** (``state.json`` + Arrow files): its Arrow files are streamed in the order
  ``state.json`` lists them, one record batch at a time through the pass's tally (no memory map: the
  driver's memory stays flat however large the dataset), rows numbered across the files
  (``FOLDER:row N`` is ``dataset[N - 1]``). A ``ClassLabel`` label column gives its class names. A
  ``DatasetDict`` folder (``dataset_dict.json``) is refused naming its splits.
- **A folder of tables** (a hub repository or its downloaded snapshot): its ``.parquet``, ``.jsonl``,
  ``.ndjson`` and ``.csv`` files, in path order, hidden ones (``.x``, ``_x``) left out; files of several
  splits (``train-*``, ``test/...``) are refused naming them, with the glob or folder of one.
- **A glob** (``*`` in the last part of the path): the matching files, in name order.

Every file is read by its format's reader with one id maker, so ids are unique across the files and
derived exactly as for one file; each file is fingerprinted on its own (:meth:`Tally.part`).
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pixart_batch.errors import first_line

from . import hub
from .columns import PromptSource
from .ids import IdMaker
from .readers import READERS, TABLE_EXTENSIONS, TableRows, read_entries, suffix
from .records import Entry, fail
from .source import Tally, open_binary

if TYPE_CHECKING:
    from pixart_batch.storage import Location

STATE_FILE = "state.json"
DICT_FILE = "dataset_dict.json"
MAX_STATE_BYTES = 16 * 2**20
SPLITS = ("train", "validation", "valid", "test", "dev", "eval")
_SPLIT_FILE_RE = re.compile(rf"({'|'.join(SPLITS)})(?=[-_.])")


def read_source(source: PromptSource, ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """The records of ``source``: one prompt file, or the files of a folder or glob (see the module)."""
    from pyarrow import fs

    name = source.path
    location = _location(name)
    if location is None:
        return read_entries(name, ids, tally, source)
    if "*" in posixpath.basename(name.rstrip("/")) and not _is_file(location, name):
        return _files(source, _glob(name), ids, tally)
    kind = _info(location, name)
    if kind == fs.FileType.NotFound and (hub.is_hub(name) or suffix(name) not in READERS):
        fail(name, hub.NOT_FOUND if hub.is_hub(name) else "no such file or folder")
    if kind != fs.FileType.Directory:
        return read_entries(name, ids, tally, source)
    if _is_file(location.child(STATE_FILE), name):
        return _datasets_folder(source, location, ids, tally)
    if _is_file(location.child(DICT_FILE), name):
        _dataset_dict(location, name)
    return _files(source, _folder_files(location, name), ids, tally)


def _location(name: str) -> Location | None:
    """Where ``name`` lies (hub, object store or local); None when that cannot be told here (the file
    reader then says what is wrong)."""
    from pixart_batch.inputs import locate_file

    if hub.is_hub(name):
        try:
            return hub.location(name)
        except Exception as exc:
            hub.refuse(name, exc)
    try:
        return locate_file(name)
    except (OSError, ValueError):
        return None


def _info(location: Location, name: str) -> object:
    from pyarrow import fs

    try:
        return location.fs.get_file_info(location.path).type
    except Exception as exc:
        if hub.is_hub(name):
            hub.refuse(name, exc)
        return fs.FileType.Unknown


def _is_dir(location: Location, name: str) -> bool:
    from pyarrow import fs

    return _info(location, name) == fs.FileType.Directory


def _is_file(location: Location, name: str) -> bool:
    from pyarrow import fs

    return _info(location, name) == fs.FileType.File


def _listing(location: Location, name: str, recursive: bool) -> list[str]:
    """The relative paths of the files below ``location``, in path order."""
    from pyarrow import fs

    try:
        infos = location.fs.get_file_info(fs.FileSelector(location.path, recursive=recursive))
    except Exception as exc:
        if hub.is_hub(name):
            hub.refuse(name, exc)
        fail(name, f"cannot list the folder ({first_line(exc, limit=200)})")
    base = location.path.strip("/")
    found = []
    for info in infos:
        path = info.path.strip("/")
        if path.startswith(base + "/") and info.type == fs.FileType.File:
            found.append(path[len(base) + 1 :])
    return sorted(found)


def _child(name: str, relative: str) -> str:
    return f"{name.rstrip('/')}/{relative}"


def _glob(name: str) -> list[str]:
    """The files ``name``'s last part matches, in name order."""
    parent, pattern = posixpath.split(name.rstrip("/"))
    folder = _location(parent or ".")
    if folder is None or not _is_dir(folder, parent or "."):
        fail(name, "no such folder for the pattern")
    listed = _listing(folder, name, False)
    matched = [rel for rel in listed if fnmatch.fnmatchcase(rel, pattern) and suffix(rel) in READERS]
    files = [_child(parent, rel) if parent else rel for rel in matched]
    if not files:
        fail(name, f"no prompt file ({', '.join(READERS)}) matches the pattern")
    return files


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _split_of(relative: str) -> str | None:
    """The split a file of a hub-style layout is of (``train/...``, ``data/train-00000-of-00002.parquet``)."""
    *folders, base = relative.split("/")
    found = next((part for part in folders if part in SPLITS), None)
    match = _SPLIT_FILE_RE.match(base)
    return found or (match[1] if match else None)


def _folder_files(location: Location, name: str) -> list[str]:
    """The tables of a folder (a hub repository, its snapshot), in path order; several splits refused."""
    listed = _listing(location, name, True)
    tables = [rel for rel in listed if suffix(rel) in TABLE_EXTENSIONS and not _hidden(rel)]
    if not tables:
        fail(name, "is a directory, not a prompt file")
    splits: dict[str, str] = {}
    for rel in tables:
        split = _split_of(rel)
        if split is not None:
            splits.setdefault(split, rel)
    if len(splits) > 1:
        split = min(splits, key=SPLITS.index)  # the example: train, if there is one
        first = splits[split]
        folders = first.split("/")
        if split in folders[:-1]:
            pick = "/".join(folders[: folders.index(split) + 1])
        else:
            pick = posixpath.join(posixpath.dirname(first), f"{split}*{suffix(first)}")
        names = ", ".join(sorted(splits, key=SPLITS.index))
        fail(name, f"holds the splits {names}; pass one of them, e.g. --prompts {_child(name, pick)}")
    return [_child(name, rel) for rel in tables]


def _files(source: PromptSource, files: list[str], ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """The records of each file in turn (one id maker: ids unique across them), each tallied on its own."""
    for path in files:
        yield from read_entries(path, ids, tally.part(path), source)


def _dataset_dict(location: Location, name: str) -> None:
    """Refuse a ``DatasetDict`` folder, naming its splits and how to pick one."""
    data = _small_json(location.child(DICT_FILE), _child(name, DICT_FILE))
    splits = data.get("splits") if isinstance(data, dict) else None
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
        fail(_child(name, DICT_FILE), "not a DatasetDict description (no 'splits' list)")
    example = _child(name, splits[0])
    listed = ", ".join(splits)
    fail(name, f"is a DatasetDict with the splits {listed}; pass the folder of one, e.g. --prompts {example}")


def _small_json(location: Location, name: str) -> object:
    try:
        with location.fs.open_input_stream(location.path) as stream:
            raw = stream.read(MAX_STATE_BYTES + 1)
    except Exception as exc:
        if hub.is_hub(name):
            hub.refuse(name, exc)
        fail(name, f"cannot read ({first_line(exc, limit=200)})")
    if len(raw) > MAX_STATE_BYTES:
        fail(name, f"larger than {MAX_STATE_BYTES // 2**20} MiB; not a datasets description")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        fail(name, f"not valid JSON ({first_line(exc, limit=120)})")


def _arrow_files(location: Location, name: str) -> list[str]:
    """The Arrow files ``state.json`` lists, in order."""
    where = _child(name, STATE_FILE)
    state = _small_json(location.child(STATE_FILE), where)
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not files:
        fail(where, "lists no data files ('_data_files'); not a folder written by datasets' save_to_disk")
    names = [entry.get("filename") if isinstance(entry, dict) else None for entry in files]
    if not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        fail(where, "a '_data_files' entry is not a file name of the folder")
    return [_child(name, str(n)) for n in names]


def _datasets_folder(source: PromptSource, location: Location, ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """The rows of a ``save_to_disk`` folder's Arrow files, streamed one record batch at a time."""
    import pyarrow as pa

    name = source.path
    table: TableRows | None = None
    for path in _arrow_files(location, name):
        with open_binary(path, tally.part(path)) as stream:
            try:
                reader = pa.ipc.open_stream(stream)
            except (pa.ArrowException, OSError) as exc:
                fail(path, f"not a readable Arrow stream file ({first_line(exc, limit=200)})")
            if table is None:
                table = TableRows(source, reader.schema, name, ids)
            elif not reader.schema.equals(table.schema, check_metadata=False):
                fail(path, "its columns differ from the first Arrow file's")
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:
                    problem = f"cannot read Arrow data ({first_line(exc, limit=200)})"
                    fail(f"{name}:row {table.rows + 1}", problem)
                yield from table.entries(batch, lambda row: f"{name}:row {row}")
            while stream.read(1 << 20):  # the rest (the end-of-stream marker), so the pass tallies every byte
                pass
    if table is None or table.rows == 0:
        fail(name, "no prompts (the dataset has no rows)")
