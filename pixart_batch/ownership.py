"""The output is ours: a marker says pixart-batch made it, and one run at a time holds it.

**Marker.** ``OUTPUT/.pixart-batch`` is written when a run first claims an empty (or new)
output. A non-empty directory without it is refused — naming a few of the files found — so a
run never overwrites a ``README.md`` or cleans up "temporaries" in a folder it did not make.
Outputs written before the marker existed (they hold a pixart-batch ``settings.json``) are
adopted.

**One writer.** ``OUTPUT/.pixart-batch.lock`` records the holder: host, pid, start time, run id.

- Local disk: the holder keeps an exclusive ``flock`` on it for the whole run. The kernel drops
  the lock when the process dies, however it dies (SIGKILL included), so a dead holder never
  blocks the next run, and a live one always does. The file is never deleted (deleting a file
  others may have open would let two runs lock two different files).
- Object stores (``s3://``, ``gs://``), which have no locks: a lease. The holder rewrites the
  lock object every :data:`HEARTBEAT_S` seconds; a lock whose object was last written more than
  :func:`stale_after_s` seconds ago (``$PIXART_BATCH_LOCK_STALE_S``, default 90) belongs to a dead
  holder (SIGKILL, a lost node) and is taken over — at once when the holder ran on this machine and
  its process is gone. Two runs that start within the same moment both write their record, wait
  :func:`settle_s` (``$PIXART_BATCH_LOCK_SETTLE_S``, default 2) and read it back: only the one whose
  record survived goes on.

The environment is read when a lock is taken or probed, never at import.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import OutputError
from .storage import Location, is_file, read_bytes, read_json_object, write_bytes_atomic

MARKER_FILE = ".pixart-batch"
LOCK_FILE = ".pixart-batch.lock"
HEARTBEAT_S = 15.0
"""Seconds between an object-store lease's renewals."""
STALE_AFTER_ENV = "PIXART_BATCH_LOCK_STALE_S"
"""The environment variable that sets :func:`stale_after_s` (default 90 seconds)."""
SETTLE_ENV = "PIXART_BATCH_LOCK_SETTLE_S"
"""The environment variable that sets :func:`settle_s` (default 2 seconds)."""


def stale_after_s() -> float:
    """Seconds after which a lease nobody renewed belongs to a dead holder: ``$PIXART_BATCH_LOCK_STALE_S``
    (default 90), read when called, so a process that sets it later (a test, an embedding program) is
    heard."""
    return float(os.environ.get(STALE_AFTER_ENV, "90"))


def settle_s() -> float:
    """Seconds a run waits after writing its lease before reading it back: ``$PIXART_BATCH_LOCK_SETTLE_S``
    (default 2), read when called."""
    return float(os.environ.get(SETTLE_ENV, "2"))


LEGACY_SETTINGS_FILE = "settings.json"
"""What marks an output written before the marker existed (``output.layout.SETTINGS_FILE``)."""


def _entries(location: Location) -> list[str]:
    """Names directly inside the output (empty when it does not exist)."""
    from pyarrow import fs

    infos = location.fs.get_file_info(fs.FileSelector(location.path, recursive=False, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def check_ours(location: Location) -> bool:
    """Whether the output is new/empty (False) or pixart-batch's (True); refuses anything else.

    Read-only: nothing is written, so a refused directory is left exactly as it was.
    """
    try:
        return _check_ours(location)
    except OutputError:
        raise
    except (OSError, ValueError) as exc:  # an unreachable bucket, no credentials, a bad URI
        text = str(exc).strip().splitlines()
        raise OutputError(
            f"{location.uri}: cannot reach the output ({text[0] if text else type(exc).__name__})"
        ) from None


def _check_ours(location: Location) -> bool:
    from pyarrow import fs

    info = location.fs.get_file_info(location.path)

    if info.type == fs.FileType.File:
        raise OutputError(f"{location.uri}: is a file, not a directory; choose a directory for the output")
    if is_file(location, location.join(MARKER_FILE)):
        try:
            marker = json.loads(read_bytes(location, location.join(MARKER_FILE)))
        except (OSError, ValueError):
            marker = None
        if not isinstance(marker, dict) or marker.get("tool") != "pixart-batch":
            raise OutputError(
                f"{location.join(MARKER_FILE)}: damaged output marker; restore it or write to a new output"
            )
        return True
    # The lock file, and the marker's own temporary while a run that holds the lock commits it.
    names = [name for name in _entries(location) if name != LOCK_FILE and not _is_marker_temporary(name)]
    if not names:
        return False
    if _is_legacy_output(location):
        return True
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")
    raise OutputError(
        f"{location.uri}: directory is not empty and was not written by pixart-batch (found: {shown}); "
        "choose a new or empty directory for the output"
    )


def is_output(location: Location) -> bool:
    """Whether ``location`` is a pixart-batch output (its marker, or a settings.json an older version
    wrote)."""
    return is_file(location, location.join(MARKER_FILE)) or _is_legacy_output(location)


def _is_marker_temporary(name: str) -> bool:
    import re

    return re.fullmatch(r"\.tmp-[0-9a-f]{12}-" + re.escape(MARKER_FILE), name) is not None


def _is_legacy_output(location: Location) -> bool:
    """An output written before the marker existed: a settings.json that pixart-batch wrote."""
    data = read_json_object(location, location.join(LEGACY_SETTINGS_FILE))
    return data is not None and "checkpoint" in data and ("seed" in data or "generation.seed" in data)


def write_marker(location: Location) -> None:
    path = location.join(MARKER_FILE)
    if not is_file(location, path):
        write_bytes_atomic(
            location, path, (json.dumps({"tool": "pixart-batch", "created": _now()}) + "\n").encode()
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Holder:
    host: str
    pid: int
    started: str
    run_id: str
    token: str

    def describe(self, age_s: float | None = None) -> str:
        seen = f", last seen {age_s:.0f}s ago" if age_s is not None else ""
        return f"host {self.host}, pid {self.pid}, started {self.started}, run {self.run_id}{seen}"

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        try:
            record = json.loads(data)
            return cls(
                str(record["host"]),
                int(record["pid"]),
                str(record["started"]),
                str(record["run_id"]),
                str(record["token"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _dead_here(holder: Holder) -> bool:
    """A holder on this machine whose process is gone (or whose pid now belongs to a newer process):
    no need to wait for its lease to go stale."""
    if holder.host != socket.gethostname():
        return False
    try:
        import calendar

        import psutil

        started = calendar.timegm(time.strptime(holder.started, "%Y-%m-%dT%H:%M:%SZ"))
        process = psutil.Process(holder.pid)
        return process.create_time() > started + 1
    except (ImportError, ValueError):
        return False
    except Exception:  # psutil.NoSuchProcess and friends: the holder is gone
        return True


class OutputLock:
    """Exclusive hold of an output for one run (see the module docstring)."""

    def __init__(self, location: Location, run_id: str) -> None:
        self.location = location
        self.path = location.join(LOCK_FILE)
        self.me = Holder(socket.gethostname(), os.getpid(), _now(), run_id, uuid.uuid4().hex)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: str | None = None
        """The holder whose stale lease this run took over (object stores), for the log."""

    def _record(self) -> bytes:
        return (json.dumps(self.me.__dict__, sort_keys=True) + "\n").encode()

    def _busy(self, holder: Holder | None, age_s: float | None = None) -> OutputError:
        who = holder.describe(age_s) if holder else "a run whose record is not readable"
        return OutputError(
            f"{self.location.uri}: another pixart-batch run holds this output ({who}); "
            "wait for it to finish or stop it, then re-run the same command"
        )

    def acquire(self) -> OutputLock:
        try:
            self.location.fs.create_dir(self.location.path, recursive=True)
            if self.location.is_local:
                self._acquire_local()
            else:
                self._acquire_lease()
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(
                f"{self.location.uri}: output is not writable ({exc.strerror or exc})"
            ) from None
        return self

    def _acquire_local(self) -> None:
        import fcntl

        for _ in range(5):
            if os.path.islink(self.path):
                raise OutputError(
                    f"{self.path}: is a symbolic link; this tool does not follow links in its output"
                )
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                data = os.pread(fd, 4096, 0)
                os.close(fd)
                raise self._busy(Holder.parse(data)) from None
            if self._same_file(fd):
                break
            os.close(
                fd
            )  # a holder removed the file (and its new folder) as this run opened it: open it again
        else:
            raise OutputError(
                f"{self.path}: the lock file keeps being replaced; another program is removing it"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._record(), 0)
        os.fsync(fd)
        self._fd = fd

    def _same_file(self, fd: int) -> bool:
        """Whether the locked ``fd`` is still the file at :attr:`path` (not one unlinked meanwhile)."""
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev)

    def _lease_state(self) -> tuple[Holder | None, float | None]:
        """The current lease holder and how long ago its record was written (None: no lease)."""
        info = self.location.fs.get_file_info(self.path)
        from pyarrow import fs

        if info.type != fs.FileType.File:
            return None, None
        try:
            holder = Holder.parse(read_bytes(self.location, self.path))
        except OSError:
            return None, None
        age = time.time() - info.mtime.timestamp() if info.mtime is not None else None
        return holder, age

    def _acquire_lease(self) -> None:
        holder, age = self._lease_state()
        fresh = age is None or age < stale_after_s()
        if holder is not None and holder.token != self.me.token and fresh and not _dead_here(holder):
            raise self._busy(holder, age)
        if holder is not None:
            self.took_over = holder.describe(age)
        write_bytes_atomic(self.location, self.path, self._record())
        time.sleep(settle_s())
        winner, age = self._lease_state()
        if winner is None or winner.token != self.me.token:
            raise self._busy(winner, age)
        self._thread = threading.Thread(target=self._heartbeat, name="pixart-batch-lease", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder, _ = self._lease_state()
                if holder is not None and holder.token != self.me.token:
                    return  # taken over (this run looked dead): never overwrite the new holder
                write_bytes_atomic(self.location, self.path, self._record())
            except OSError:
                pass  # a missed beat; the next one retries

    def stop_heartbeat(self) -> bool:
        """Stop renewing the lease, keeping it: to the other runs this holder now looks dead (SIGKILLed,
        its node lost), and its lease goes stale after :func:`stale_after_s`. Waits for the renewals to
        end; returns whether there were any (an object-store lease; a local ``flock`` has none).
        :meth:`release` still lets go as usual. Tests use it to simulate a dead holder."""
        self._stop.set()
        if self._thread is None:
            return False
        self._thread.join()
        return True

    def release(self, remove: bool = False) -> None:
        """Let go of the output; ``remove``: delete the lock file too (locally, while still holding it, so a
        run that opened it meanwhile finds it replaced and opens the new one): for a folder this run made
        and leaves empty."""
        self._stop.set()
        if self._fd is not None:
            import fcntl

            if remove:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            return
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                holder, _ = self._lease_state()
                if holder is not None and holder.token == self.me.token:
                    self.location.fs.delete_file(self.path)
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return self._fd is not None or self._thread is not None

    def __enter__(self) -> OutputLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def current_holder(location: Location) -> Holder | None:
    """The live run that holds the output's lock, or None; for ``verify`` and ``status``.

    Read-only, and it never takes the lock: the lock file is never created, written, truncated or
    removed. Object stores: the lease's record while it is fresh. Locally, the kernel's lock table
    (``/proc/locks``, Linux) answers without touching the lock; only when it cannot — no such table, or
    a record from another host (a shared file system) — a non-blocking shared ``flock`` on a separate
    descriptor, released at once, asks (a run starting in that instant is refused and says so).
    A held lock whose record cannot be read (the holder is writing it) gives a holder with pid 0.
    """
    if not location.is_local:
        holder, age = OutputLock(location, "probe")._lease_state()
        fresh = age is None or age < stale_after_s()
        return holder if holder is not None and fresh and not _dead_here(holder) else None
    try:
        fd = os.open(location.join(LOCK_FILE), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # no lock file (no run yet, or removed with the empty folder it made), a link: not held
        return None
    try:
        holder = Holder.parse(os.pread(fd, 4096, 0))
        held = _locked_in_table(os.fstat(fd))
        if held is None or (not held and holder is not None and holder.host != socket.gethostname()):
            held = _locked_by_probe(fd)
    finally:
        os.close(fd)  # closing our own descriptor never releases another's flock
    if not held:
        return None
    return holder or Holder("unknown", 0, "unknown", "unknown", "")


def _locked_in_table(stat: os.stat_result) -> bool | None:
    """Whether the kernel's lock table shows an exclusive ``flock`` on the file (None: no table, or an
    entry that matches the inode but not the device, as on some stacked file systems)."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    exact = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    unsure = False
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue  # a waiter, a POSIX lock, a shared lock
        if fields[5] == exact:
            return True
        unsure = unsure or fields[5].rsplit(":", 1)[-1] == str(stat.st_ino)
    return None if unsure else False


def _locked_by_probe(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without flock: no run can hold it either
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
