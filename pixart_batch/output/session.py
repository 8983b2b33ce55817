"""One output session: the only way a command writes an output (``generate``, ``encode``, ``export``,
``score``; quarantine happens inside a ``generate`` session).

Every command follows the same order:

1. **validate**, writing nothing (the command's own checks: models loaded or fully checked, inputs
   scanned, sizes counted);
2. **lock** the output (:class:`~pixart_batch.ownership.OutputLock`; one writer at a time), then
   **re-check** what the lock protects: the folder is new or ours (a *fresh* session — an export —
   needs it new), and the command's own checks passed to :meth:`OutputSession.recheck` (the settings
   guard, the scoring identity), since another command may have changed them while this one started;
3. the **marker**, then the temporaries that crashed writers left (:meth:`OutputDataset.prepare`:
   only names this tool writes, in places it writes, never one of the run's inputs);
4. **settings** → **plan** → **data** → **card** → **report**, through the session's methods, in this
   order for every command.

On failure the session removes only what it wrote itself: a fresh output (found new or empty under the
lock, so everything in it is this session's) goes back to empty; otherwise ``settings.json`` is
restored to what it was when the session changed it and no data was committed, and data that was
committed stays (a re-run resumes from it). A folder another command finished is never removed: a
fresh session that finds one under the lock refuses before writing anything.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from ..errors import OutputError, first_line
from ..ownership import LOCK_FILE, OutputLock, check_ours, write_marker
from ..progress import say
from ..storage import is_file, read_bytes, remove_tree, write_bytes_atomic
from .layout import CARD_FILE, REPORT_FILE, SETTINGS_FILE, OutputDataset


def new_run_id(prefix: str = "") -> str:
    """A run id: the UTC time and six random hex digits (alphanumeric: it names ``plan/<run>/``)."""
    return prefix + time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + uuid.uuid4().hex[:6]


class OutputSession:
    """A command's hold of one output, from the lock to the report (see the module's docstring).

    ``fresh``: the command makes a new output (``export``): the folder must be new or empty under the
    lock, and a failure empties it again. ``takeover``: for a fresh session, whether an existing
    output found under the lock may be replaced (an export that was killed before it finished).
    ``inputs``: paths the command reads (its prompt file): never removed as a temporary.
    """

    def __init__(
        self,
        output: OutputDataset,
        run_id: str,
        *,
        fresh: bool = False,
        takeover: Callable[[OutputDataset], str | None] | None = None,
        inputs: Iterable[str] = (),
        log: Callable[[str], None] = say,
    ) -> None:
        self.output, self.run_id, self.fresh, self.takeover, self.log = output, run_id, fresh, takeover, log
        self.inputs = tuple(inputs)
        self.lock = OutputLock(output.location, run_id)
        self.data_committed = False
        self.temporaries_removed = 0
        self._settings_before: bytes | None = None
        self._settings_changed = False

    # -- the hold
    def __enter__(self) -> OutputSession:
        from pyarrow import fs

        location = self.output.location
        self.created_dir = location.fs.get_file_info(location.path).type == fs.FileType.NotFound
        self.lock.acquire()
        try:
            if self.lock.took_over:
                self.log(f"took over the output from a run that stopped answering ({self.lock.took_over})")
            ours = check_ours(self.output.location)
            if ours and self.fresh:
                self._replace_unfinished()
            # The marker is the first thing written, right under the lock: a command starting beside this
            # one then finds an output that is ours (and the lock held), never a half-made folder it would
            # take for someone else's.
            write_marker(self.output.location)
            self.output.check_writable()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _replace_unfinished(self) -> None:
        """A fresh session found an output under the lock: refused, unless ``takeover`` says it is an
        unfinished one of the same command (killed before it finished), which is emptied first."""
        uri = self.output.uri
        reason = self.takeover(self.output) if self.takeover is not None else None
        if reason is None:
            raise OutputError(
                f"{uri}: is a pixart-batch output already (another command finished it while this one was "
                "starting); nothing was written: choose a new or empty directory"
            )
        self.log(f"{uri}: {reason}; starting it again")
        self._empty()

    def recheck(self, *checks: Callable[[], str | None]) -> None:
        """Run the command's checks again under the lock (each returns a line to log, or None)."""
        for check in checks:
            line = check()
            if line:
                self.log(line)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        emptied = False
        try:
            if kind is not None:
                emptied = self._roll_back()
        finally:
            self.output.remove_work(self.run_id)
            self.lock.release(remove=emptied and self.created_dir)
        if emptied and self.created_dir:
            self._remove_dir()

    def _remove_dir(self) -> None:
        """The folder this session made, back to not existing (if nothing appeared in it meanwhile)."""
        import os

        location = self.output.location
        try:
            if location.is_local:
                os.rmdir(location.path)
            else:
                location.fs.delete_dir(location.path)
        except OSError:
            pass

    def _roll_back(self) -> bool:
        """Undo what this session wrote and no later command may rely on (see the module's docstring);
        whether a fresh output was emptied."""
        try:
            if self.fresh:
                self._empty()
                return True
            if self._settings_changed and not self.data_committed:
                self._restore_settings()
        except OSError as exc:  # the failure that got us here matters more; say what is left
            self.log(f"{self.output.uri}: could not undo this command's writes ({first_line(exc)})")
        return False

    def _empty(self) -> None:
        """Everything in a fresh output but the lock file (all of it was written under this session's
        lock)."""
        from pyarrow import fs

        location = self.output.location
        for info in location.fs.get_file_info(fs.FileSelector(location.path, allow_not_found=True)):
            if info.base_name == LOCK_FILE:
                continue
            if info.type == fs.FileType.Directory:
                remove_tree(location, info.path)
            else:
                location.fs.delete_file(info.path)

    def _restore_settings(self) -> None:
        location, path = self.output.location, self.output.location.join(SETTINGS_FILE)
        if self._settings_before is None:
            if is_file(location, path):
                location.fs.delete_file(path)
        else:
            write_bytes_atomic(location, path, self._settings_before)

    # -- what the command writes, in the session's order
    def prepare(self) -> int:
        """Remove what crashed writers left (never one of :attr:`inputs`); returns how many files."""
        self.temporaries_removed = self.output.prepare(keep=self.inputs)
        return self.temporaries_removed

    def write_settings(self, settings: dict[str, Any]) -> None:
        """``settings.json`` (restored on failure while no data is committed)."""
        location, path = self.output.location, self.output.location.join(SETTINGS_FILE)
        if not self._settings_changed:
            self._settings_before = read_bytes(location, path) if is_file(location, path) else None
        text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
        if self._settings_before is not None and self._settings_before.decode(errors="replace") == text:
            return
        self._write(SETTINGS_FILE, lambda: self.output.write_json(SETTINGS_FILE, settings))
        self._settings_changed = True

    def committed(self) -> None:
        """Say that data (a shard) was committed: from now on a failure keeps the settings it was made
        with."""
        self.data_committed = True

    def write_card(
        self, settings: dict[str, Any], counts: dict[str, Any], features: list[dict[str, Any]] | None = None
    ) -> None:
        from .card import write_card

        self._write(CARD_FILE, lambda: write_card(self.output, settings, counts, features=features))

    def write_report(self, report: dict[str, Any], name: str = REPORT_FILE) -> None:
        self._write(name, lambda: self.output.write_json(name, report))

    def _write(self, name: str, write: Callable[[], None]) -> None:
        """One metadata file: a failure to write it (a folder in its place, a full disk) is one line."""
        try:
            write()
        except OSError as exc:
            raise OutputError(
                f"{self.output.location.join(name)}: cannot be written ({exc.strerror or first_line(exc)}); "
                "committed images are kept: fix the cause and re-run"
            ) from None
