"""Prompt sources on the Hugging Face Hub: ``hf://datasets/ORG/NAME[@REVISION][/PATH]``, read through
``huggingface_hub``'s ``HfFileSystem`` wrapped as a pyarrow file system (``PyFileSystem(FSSpecHandler)``),
so every reader works on it as on a local or object-store file. ``PATH`` is a file, a folder or a glob,
as for a local path; nothing is downloaded ahead (Parquet is read by ranges, the other formats streamed).

Offline (``HF_HUB_OFFLINE`` set, or the hub cannot be reached) the error names the cached copy of the
repository to pass as ``--prompts`` instead (the ``huggingface_hub`` cache's snapshot), or how to
download one.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pixart_batch.errors import UserError, first_line

from .records import fail

if TYPE_CHECKING:
    from pixart_batch.storage import Location

PREFIX = "hf://"
FORM = "hf://datasets/ORG/NAME[/path]"
_UNREACHABLE = (
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "ConnectError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "TimeoutException",
    "NetworkError",
    "gaierror",
)
"""Errors (by class name, anywhere in the chain) that mean the hub cannot be reached from here."""
NOT_FOUND = "not found on the Hugging Face Hub (a private or gated dataset needs `hf auth login` first)"
_NOT_FOUND = (
    "RepositoryNotFoundError",
    "GatedRepoError",
    "RevisionNotFoundError",
    "EntryNotFoundError",
    "FileNotFoundError",
)


@dataclass(frozen=True)
class HubPath:
    """``hf://datasets/ORG/NAME[@REVISION][/PATH]`` taken apart."""

    repo_id: str
    revision: str | None
    path: str
    """Inside the repository, no leading or trailing ``/``; ``""``: the repository's root."""


def is_hub(name: str) -> bool:
    return name.startswith(PREFIX)


def parse(name: str) -> HubPath:
    """Take ``name`` apart; a model or Space repository, or no ``ORG/NAME``, is refused in one line."""
    kind, _, rest = name[len(PREFIX) :].partition("/")
    if kind != "datasets":
        fail(name, f"prompts are read from dataset repositories of the Hub: {FORM}")
    org, _, rest = rest.partition("/")
    repo, _, path = rest.partition("/")
    repo, _, revision = repo.partition("@")
    if not org or not repo:
        fail(name, f"expected {FORM}")
    return HubPath(f"{org}/{repo}", revision or None, path.strip("/"))


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (as ``huggingface_hub`` read it at import, or in the environment now)."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE) or now


def filesystem() -> Any:
    """The fsspec file system the hub is read through (``HfFileSystem``; tests put a fake one here)."""
    from huggingface_hub import HfFileSystem

    return HfFileSystem()


def location(name: str) -> Location:
    """A :class:`~pixart_batch.storage.Location` of ``name`` on the hub's file system (offline: refused)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from pixart_batch.storage import Location

    parse(name)
    if offline():
        unreachable(name, "HF_HUB_OFFLINE is set")
    hub_fs = PyFileSystem(FSSpecHandler(filesystem()))
    return Location(hub_fs, name[len(PREFIX) :].rstrip("/"), name.rstrip("/"))


def _names(exc: BaseException) -> set[str]:
    """The class names of ``exc`` and of every exception in its chain (and their bases)."""
    names: set[str] = set()
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        names.update(cls.__name__ for cls in type(current).__mro__)
        current = current.__cause__ or current.__context__
    return names


def refuse(name: str, exc: BaseException) -> NoReturn:
    """Raise the one-line error for ``exc``, raised while reading ``name`` from the hub."""
    if isinstance(exc, UserError):
        raise exc
    names = _names(exc)
    if names.intersection(_UNREACHABLE):
        unreachable(name, first_line(exc, limit=120, with_type=True))
    if names.intersection(_NOT_FOUND):
        fail(name, NOT_FOUND)
    fail(name, f"cannot read from the Hugging Face Hub ({first_line(exc, limit=200, with_type=True)})")


def unreachable(name: str, why: str) -> NoReturn:
    """The hub cannot be reached: name the cached copy to pass instead, or how to download one."""
    where = parse(name)
    cached = cached_copy(where)
    problem = f"the Hugging Face Hub cannot be reached ({why})"
    if cached is not None:
        fail(name, f"{problem}; a copy is cached here: pass --prompts {cached}")
    revision = f" --revision {where.revision}" if where.revision else ""
    inside = f"/{where.path}" if where.path else ""
    download = f"hf download --repo-type dataset {where.repo_id}{revision} --local-dir DIR"
    advice = f"where it can, run `{download}` and pass --prompts DIR{inside}"
    fail(name, f"{problem} and no copy is cached here; {advice}")


def cached_copy(where: HubPath) -> str | None:
    """The local path of ``where`` in the ``huggingface_hub`` cache (the snapshot of its revision, else the
    newest snapshot holding the path), or None."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    root = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=where.repo_id, repo_type="dataset")
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = root / "refs" / (where.revision or "main")
    if ref.is_file():
        candidates = [snapshots / ref.read_text().strip()]
    elif where.revision and (snapshots / where.revision).is_dir():
        candidates = [snapshots / where.revision]
    else:
        found = (p for p in snapshots.iterdir() if p.is_dir())
        candidates = sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
    for snapshot in candidates:
        target = snapshot / where.path if where.path else snapshot
        if target.exists() or ("*" in target.name and glob.glob(str(target))):
            return str(target)
    return None
