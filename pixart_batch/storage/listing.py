"""What a folder holds and the tidying of it: committed files listed (temporaries, hidden names and
nested outputs or stores skipped), crashed writers' temporaries removed, folders this tool made
removed, files moved aside to quarantine. Locally, no symbolic link is ever followed."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator

from .commits import TMP_NAME, TMP_PREFIX
from .locations import Location, makedirs, remove_quietly

NESTED_ROOT_FILES = (".pixart-batch", "store.json")
"""Files that make their folder someone else's: another output's marker (``ownership.MARKER_FILE``), an
output's store pointer or an embedding store's identity. A folder below the one listed that holds one is
another output or store nested there: :func:`list_files` never lists its files, so nothing this tool does
to what it lists (quarantine, reading shards or parts) reaches them."""


def list_files(loc: Location, path: str, suffix: str = "", recursive: bool = True) -> list[str]:
    """Committed files under ``path`` (sorted), skipping temporaries, hidden names and the files of
    outputs or stores nested below ``path`` (:data:`NESTED_ROOT_FILES`); locally, no symbolic link is
    followed."""
    found = []
    for file_path, _ in _own_files(loc, path):
        if not file_path.endswith(suffix):
            continue
        relative = posixpath.relpath(file_path, path)
        if not recursive and "/" in relative:
            continue
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        found.append(file_path)
    return sorted(found)


def nested_roots(loc: Location, path: str) -> list[str]:
    """Folders below ``path`` that hold another output or store (:data:`NESTED_ROOT_FILES`), outermost
    only."""
    return _nested_roots(path, [file_path for file_path, _ in _walk_files(loc, path)])


def _nested_roots(path: str, files: list[str]) -> list[str]:
    roots = sorted(
        {
            posixpath.dirname(file_path)
            for file_path in files
            if "/" in posixpath.relpath(file_path, path)
            and posixpath.basename(file_path) in NESTED_ROOT_FILES
        }
    )
    return [root for root in roots if not any(root.startswith(other + "/") for other in roots)]


def _own_files(loc: Location, path: str) -> list[tuple[str, float | None]]:
    """:func:`_walk_files` without the files of outputs and stores nested below ``path``."""
    files = list(_walk_files(loc, path))
    nested = tuple(root + "/" for root in _nested_roots(path, [file_path for file_path, _ in files]))
    return (
        [(file_path, mtime) for file_path, mtime in files if not file_path.startswith(nested)]
        if nested
        else files
    )


def remove_temporaries(
    loc: Location,
    path: str,
    older_than_s: float = 0.0,
    recursive: bool = True,
    only: set[str] | None = None,
    keep: tuple[str, ...] = (),
) -> int:
    """Delete leftover temporaries of crashed writers under ``path``; returns how many.

    Only files named exactly as :func:`~pixart_batch.storage.write_bytes_atomic` names them
    (``.tmp-<12 hex>-<name>``) are removed, never inside an output or store nested below ``path``,
    and on a local disk no symbolic link is followed or removed: whatever a link points to is not
    this tool's. ``older_than_s`` spares recent ones (a store shared by several outputs may have a
    live writer of another run). ``recursive=False``: only directly in ``path``; ``only``: the final
    paths whose temporaries may go (a temporary of another name is left); ``keep``: paths never
    removed (the run's inputs), compared after resolving links locally.
    """
    import time

    kept = {_resolved(loc, p) for p in keep}
    removed = 0
    for file_path, mtime in _own_files(loc, path):
        parent, name = posixpath.split(file_path)
        if not TMP_NAME.match(name) or (not recursive and parent.rstrip("/") != path.rstrip("/")):
            continue
        if only is not None and posixpath.join(parent, name[len(TMP_PREFIX) + 13 :]) not in only:
            continue
        if _resolved(loc, file_path) in kept:
            continue
        if older_than_s and mtime is not None and time.time() - mtime < older_than_s:
            continue
        remove_quietly(loc, file_path)
        removed += 1
    return removed


def _resolved(loc: Location, path: str) -> str:
    return os.path.realpath(path) if loc.is_local else path


def _walk_files(loc: Location, path: str) -> Iterator[tuple[str, float | None]]:
    """``(path, mtime)`` of the regular files under ``path``; locally, symbolic links are neither
    followed nor listed."""
    if loc.is_local:
        for root, dirs, files in os.walk(path, followlinks=False):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            for name in files:
                full = os.path.join(root, name)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                yield full, os.lstat(full).st_mtime
        return
    from pyarrow import fs

    for info in loc.fs.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type == fs.FileType.File:
            yield info.path, info.mtime.timestamp() if info.mtime is not None else None


def remove_tree(loc: Location, path: str) -> None:
    """Remove a folder this tool made (``.work/<run>``, an old plan); a symbolic link in its place is
    unlinked, never followed. Missing is fine."""
    import shutil

    if loc.is_local:
        if os.path.islink(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        return
    try:
        loc.fs.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass


def move_aside(loc: Location, path: str, target: str) -> None:
    """Move a committed file out of the dataset (to quarantine): a rename locally, copy + delete on
    object stores (which have no rename); the file is never deleted without its copy."""
    makedirs(loc, posixpath.dirname(target))
    if loc.is_local:
        loc.fs.move(path, target)
        return
    loc.fs.copy_file(path, target)
    loc.fs.delete_file(path)
