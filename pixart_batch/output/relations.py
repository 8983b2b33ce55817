"""Where a run's paths may lie relative to each other and to other outputs and stores, checked before
anything is written (local paths after resolving symbolic links and ``..``; object-store URIs after
resolving ``..``).

- The output may not lie inside an embedding store (this run's, or any folder holding a store's
  identity), nor inside a folder another pixart-batch output writes (:data:`RESERVED_DIRS`).
- The embedding store may not lie inside any output's :data:`STORE_FORBIDDEN_DIRS` (its shards, its
  quarantine, its gallery, ...: another output's ``embeddings/`` is a shared store, which is fine), nor
  inside another store.
- The prompt file (or folder; a hub dataset, ``hf://``, lies nowhere this run writes) and the
  checkpoint's folders may not lie where this run writes: the output's reserved folders and files,
  and the store; neither the output nor the store may lie inside a prompt folder (read whole).

Each refusal is one line naming both paths and the rule.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import OutputError
from ..ownership import is_output
from ..storage import Location, locate, read_json_object
from ..store import IDENTITY_FILE
from .layout import OWN_DIRS, OWN_FILES, STORE_DIR

if TYPE_CHECKING:
    from collections.abc import Iterable

RESERVED_DIRS = OWN_DIRS
"""The folders an output's runs and commands write, move files in, or remove."""
STORE_FORBIDDEN_DIRS = tuple(name for name in RESERVED_DIRS if name != STORE_DIR)
RESERVED_FILES = OWN_FILES
"""The files a run writes at the top of its output."""


@dataclass(frozen=True)
class Place:
    """A path resolved for comparison: ``scope`` names the file system (``file``, or the URI's scheme and
    any query), ``path`` is absolute, normalized, without a trailing slash."""

    scope: str
    path: str
    location: Location = field(compare=False)

    @classmethod
    def of(cls, uri: str) -> Place:
        if "://" in uri and not uri.startswith("file://"):
            scheme, rest = uri.split("://", 1)
            rest, _, query = rest.partition("?")
            path = posixpath.normpath("/" + rest).lstrip("/")
            return cls(
                f"{scheme}?{query}", path, locate(f"{scheme}://{path}" + (f"?{query}" if query else ""))
            )
        local = os.path.realpath(os.path.expanduser(uri.removeprefix("file://")))
        return cls("file", local, locate(local))

    @property
    def uri(self) -> str:
        return self.path if self.scope == "file" else f"{self.scope.split('?')[0]}://{self.path}"

    def inside(self, other: Place) -> bool:
        """``self`` is ``other`` or lies below it."""
        return self.scope == other.scope and (
            self.path == other.path or self.path.startswith(other.path.rstrip("/") + "/")
        )

    def first_part_below(self, other: Place) -> str | None:
        """The first path component of ``self`` below ``other`` (None when not below it)."""
        if not self.inside(other) or self.path == other.path:
            return None
        return self.path[len(other.path.rstrip("/")) + 1 :].split("/")[0]

    def ancestors(self) -> Iterable[Place]:
        """The folders above this path, nearest first (up to the root or the bucket)."""
        path = self.path
        while True:
            parent = posixpath.dirname(path)
            if not parent or parent == path:
                return
            path = parent
            yield Place(
                self.scope,
                path,
                Location(self.location.fs, path, path if self.scope == "file" else self._uri(path)),
            )

    def _uri(self, path: str) -> str:
        return f"{self.scope.split('?')[0]}://{path}"

    def child(self, name: str) -> Place:
        path = self.path.rstrip("/") + "/" + name
        return Place(self.scope, path, self.location.child(name))


def check_relations(output: str, store: str, prompts: str | None, checkpoints: Iterable[str] = ()) -> None:
    """Refuse a run whose output, store, prompt file and checkpoint overlap in a way that lets one
    damage another (see the module's docstring); reads a few small files, writes nothing."""
    out, into = Place.of(output), Place.of(store)
    own_store = into == out.child(STORE_DIR)  # the default: OUTPUT/embeddings
    if not own_store and out.inside(into):
        raise OutputError(
            f"{out.uri}: the output lies inside the embedding store {into.uri}; choose an output outside it"
        )
    not_inside_others(out, "the output", RESERVED_DIRS)
    if not own_store:
        part = into.first_part_below(out)
        if part in RESERVED_FILES:
            raise OutputError(
                f"{into.uri}: the embedding store would take the place of {out.child(part).uri}, "
                f"a file the output {out.uri} writes; choose another store folder"
            )
        if part in STORE_FORBIDDEN_DIRS:
            raise OutputError(
                f"{into.uri}: the embedding store lies inside {out.child(part).uri}, "
                f"which the output {out.uri} writes; choose a store outside it"
            )
        not_inside_others(into, "the embedding store", STORE_FORBIDDEN_DIRS)
    if not own_store:  # the output's own store: the output's checks say what is wrong with its folder
        _not_a_file(into, "the embedding store")
    written = [(out.child(name), f"the output {out.uri} writes") for name in RESERVED_DIRS + RESERVED_FILES]
    written.append((into, f"the embedding store of this run ({into.uri}) writes"))
    hub = prompts is not None and prompts.startswith("hf://")  # a hub dataset: nowhere this run writes
    inputs = [("the prompt file", prompts)] if prompts and not hub else []
    inputs += [("the checkpoint", folder) for folder in checkpoints]
    if inputs and inputs[0][0] == "the prompt file":
        _not_in_prompt_folder(Place.of(inputs[0][1]), ((out, "the output"), (into, "the embedding store")))
    for what, path in inputs:
        place = Place.of(path)
        for target, rule in written:
            if place.inside(target):
                raise OutputError(
                    f"{place.uri}: {what} lies inside {target.uri}, which {rule}; "
                    "move it or choose another output"
                )
        if what == "the checkpoint" and out.inside(place) and place.inside(out):
            raise OutputError(f"{out.uri}: the output is the checkpoint's folder; choose another output")


def _not_in_prompt_folder(prompts: Place, written: tuple[tuple[Place, str], ...]) -> None:
    """Refuse an output or store inside a prompt folder (a folder of tables is read whole: its files
    would become prompts)."""
    for place, what in written:
        if place.inside(prompts):
            folder = f"the prompt folder {prompts.uri}"
            problem = f"{what} lies inside {folder}, whose files are read as prompts"
            raise OutputError(f"{place.uri}: {problem}; choose a place outside it")


def _not_a_file(place: Place, what: str) -> None:
    """Refuse a folder the run would create where a file (or a file in place of a parent) is."""
    from pyarrow import fs

    for ancestor in (place, *place.ancestors()):
        try:
            kind = ancestor.location.fs.get_file_info(ancestor.location.path).type
        except OSError:
            return  # unreadable (a bucket's root): the run's own checks say so
        if kind == fs.FileType.File:
            raise OutputError(
                f"{place.uri}: {what} folder would be inside the file {ancestor.uri}; choose a folder"
            )
        if kind == fs.FileType.Directory:
            return


def not_inside_others(place: Place, what: str, reserved: tuple[str, ...] = RESERVED_DIRS) -> None:
    """Refuse ``place`` inside a store's keyed folder, or inside one of another output's ``reserved`` folders
    (``what``: how the message names ``place``, "the output")."""
    for ancestor in place.ancestors():
        location = ancestor.location
        try:
            if _is_store(location):
                raise OutputError(
                    f"{place.uri}: {what} lies inside the embedding store {ancestor.uri}; "
                    "choose another place"
                )
            if not is_output(location):
                continue
        except OSError:
            # An ancestor that cannot be read (a bucket's root, a folder without permission): nothing
            # there is ours.
            continue
        part = place.first_part_below(ancestor)
        if part in reserved:
            raise OutputError(
                f"{place.uri}: {what} lies inside {ancestor.child(part).uri}, "
                f"which the pixart-batch output {ancestor.uri} writes; choose a place outside it"
            )


def _is_store(location: Location) -> bool:
    """A store's keyed folder: its ``store.json`` is the store's identity (an output's is a pointer)."""
    data = read_json_object(location, location.join(IDENTITY_FILE))
    return data is not None and "encoder" in data and "d_model" in data
