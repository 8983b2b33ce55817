"""Locations on pyarrow file systems (local paths, ``s3://``, ``gs://``) and the small reads and
probes every writer and reader shares: a :class:`Location` is a directory on some file system."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem


@dataclass(frozen=True)
class Location:
    """A directory on some file system: ``fs`` is a ``pyarrow.fs.FileSystem``, ``path`` its path there."""

    fs: FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        from pyarrow import fs

        return isinstance(self.fs, fs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def child(self, *parts: str) -> Location:
        sep = "" if self.uri.endswith("/") else "/"
        return Location(self.fs, self.join(*parts), self.uri + sep + "/".join(parts))


def locate(uri: str) -> Location:
    """Resolve a local path or ``scheme://`` URI to a :class:`Location`."""
    from pyarrow import fs

    if "://" in uri and not uri.startswith("file://"):
        try:
            filesystem, path = fs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as exc:
            from ..errors import UserError

            text = str(exc).strip().splitlines()
            raise UserError(
                f"{uri}: cannot open this location ({text[0] if text else type(exc).__name__})"
            ) from None
        return Location(filesystem, path.rstrip("/"), uri.rstrip("/"))
    local = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
    return Location(fs.LocalFileSystem(), local, local)


def is_file(loc: Location, path: str) -> bool:
    from pyarrow import fs

    return loc.fs.get_file_info(path).type == fs.FileType.File


def is_symlink(loc: Location, path: str) -> bool:
    return loc.is_local and os.path.islink(path)


def makedirs(loc: Location, path: str) -> None:
    loc.fs.create_dir(path, recursive=True)


def read_bytes(loc: Location, path: str) -> bytes:
    with loc.fs.open_input_stream(path) as stream:
        return stream.read()


def read_json_object(loc: Location, path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object (a probe:
    callers that must refuse garbage read and validate the file themselves)."""
    import json

    if not is_file(loc, path):
        return None
    try:
        data = json.loads(read_bytes(loc, path))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def remove_quietly(loc: Location, path: str) -> None:
    """Delete the file ``path`` if it is there (a cleanup: a missing or undeletable file is no error)."""
    try:
        loc.fs.delete_file(path)
    except OSError:
        pass
