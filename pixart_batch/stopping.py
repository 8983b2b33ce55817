"""A graceful stop of the generate phase, on either executor (Ray-free).

The first SIGINT or SIGTERM while images are being made does not raise: it asks the run to drain.
No new DiT batch starts, the batches already in flight finish, and every image made so far (every
image the progress line counted) is committed, the open shard closed as a short one; then the run
raises ``KeyboardInterrupt`` (SIGINT, exit 130) or :class:`~pixart_batch.signals.Terminated`
(SIGTERM, exit 143) as an interrupted run always did. A second signal abandons the flush at once.

- :class:`GracefulStop`: the driver's handlers for the generate phase (main thread only; the
  previous handlers are restored afterwards); the in-process executor reads :attr:`GracefulStop.requested`.
- :class:`StopFlag`: how the request reaches Ray's workers: an empty file ``OUTPUT/.work/<run>/stop``
  on the output's own storage, so any process of the run reads it through a pyarrow file system
  (an actor restarted on another node too), each process at most every :data:`CHECK_EVERY_S`.
- :func:`stoppable`: a model stage class that returns no rows for a batch it has not started once
  the flag is set (the first model stage only: images already denoised are still decoded).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import FrameType
from typing import TYPE_CHECKING, Any

from .batches import Batch, take
from .progress import PREFIX
from .signals import Terminated

if TYPE_CHECKING:
    from .storage import Location

STOP_FILE = "stop"
CHECK_EVERY_S = 0.5
"""How often one process reads the stop flag at most (object stores are not asked for every batch)."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@lru_cache(maxsize=8)
def _location(uri: str) -> Location:
    from .storage import locate

    return locate(uri)


@dataclass(frozen=True)
class StopFlag:
    """The stop request of one run: ``OUTPUT/.work/<run_id>/stop`` (``.work/<run>`` is removed when the
    run ends, so the flag never outlives its run). Small and picklable: it travels to Ray's workers."""

    output_uri: str
    run_id: str

    def _where(self) -> tuple[Location, str]:
        from .output.layout import WORK_DIR

        location = _location(self.output_uri)
        return location, location.join(WORK_DIR, self.run_id, STOP_FILE)

    def request(self) -> None:
        from .storage import write_bytes_atomic

        location, path = self._where()
        write_bytes_atomic(location, path, b"")
        _seen[self] = (time.monotonic(), True)

    def requested(self) -> bool:
        """Whether the stop was requested (read at most every :data:`CHECK_EVERY_S` per process; once
        seen, it stays seen). A flag that cannot be read counts as not requested: the run goes on."""
        checked_at, seen = _seen.get(self, (None, False))
        now = time.monotonic()
        if seen or (checked_at is not None and now - checked_at < CHECK_EVERY_S):
            return seen
        from .storage import is_file

        try:
            location, path = self._where()
            seen = is_file(location, path)
        except Exception:
            seen = False
        _seen[self] = (now, seen)
        return seen


_seen: dict[StopFlag, tuple[float | None, bool]] = {}
"""Per process: when each flag was last read, and whether it was set."""


def clear_caches() -> None:
    """Forget, in this process, which stop flags were read (and whether they were set) and the
    locations resolved for them, so the next :meth:`StopFlag.requested` reads the flag again. A run
    never needs it (a flag once seen stays seen for its run); for tests and long-lived processes that
    reuse a run id."""
    _seen.clear()
    _location.cache_clear()


def nothing(batch: Batch) -> Batch:
    """The batch's columns with no rows: what a stopped stage returns for the rows it did not start."""
    return take(batch, slice(0, 0))


def stoppable(stage_cls: type, flag: StopFlag) -> type:
    """The stage class, returning no rows for a batch it is given after ``flag`` is set (the batches it
    already started finish). Keeps the stage's name (Ray shows it as ``MapBatches(<name>)``)."""

    class Stoppable(stage_cls):
        def __call__(self, batch: Batch) -> Batch:
            if flag.requested():
                return nothing(batch)
            return super().__call__(batch)

    Stoppable.__name__ = Stoppable.__qualname__ = stage_cls.__name__
    return Stoppable


def _interrupt(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def tell(message: str) -> None:
    """One console line from a signal handler: through :func:`~pixart_batch.progress.say`, or straight
    to the stream's descriptor when the handler interrupted a write to that stream (``say`` would raise)."""
    from .progress import say

    try:
        say(message)
    except RuntimeError:  # "reentrant call": this thread was writing to stderr when the signal came
        try:
            os.write(sys.stderr.fileno(), f"{PREFIX} {message}\n".encode(errors="replace"))
        except (OSError, ValueError, AttributeError):
            pass


class GracefulStop:
    """SIGINT / SIGTERM handlers for the generate phase (a context manager).

    The first signal sets :attr:`requested`, says so in one line, and (given a ``flag``) writes the
    :class:`StopFlag` the workers read; the executor then drains and calls :meth:`raise_if_stopped`.
    A second signal abandons the flush: it raises at once. ``counted()`` gives the images counted so
    far (the progress line's). Handlers are installed only in the main thread (Python's rule)."""

    def __init__(self, counted: Callable[[], int], flag: StopFlag | None = None) -> None:
        self.counted, self.flag = counted, flag
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            tell(f"{name} again: abandoning the flush; images not committed yet are made again by the re-run")
            raise _interrupt(signum)
        self.signum = signum
        count = self.counted()
        tell(f"stopping ({name}): committing the {count} images generated so far (Ctrl-C again to abandon)")
        if self.flag is None:
            return
        try:
            self.flag.request()
        except Exception as exc:  # the workers cannot be told: stop as an interrupted run always did
            from .errors import first_line

            tell(f"cannot ask the workers to stop ({first_line(exc)}); stopping now, committed work is kept")
            raise _interrupt(signum) from None

    def raise_if_stopped(self) -> None:
        """After the drain: ``KeyboardInterrupt`` (SIGINT) or :class:`Terminated` (SIGTERM), as an
        interrupted run raises (the CLI prints its resume hint and exits 130 / 143)."""
        if self.signum is not None:
            raise _interrupt(self.signum)
