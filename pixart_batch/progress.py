"""The console: one line per phase, one progress line while images are made, a final summary.

In a terminal the progress line is rewritten in place (at most every 0.5 s); elsewhere (a log
file, ``ray job logs``) it is printed as a new line every ``console.progress_interval_s``
seconds, and once at the end, so a log stays short and still shows the run is alive.

From Python (:mod:`pixart_batch.api`) the lines can go to a callback instead of stderr:
:func:`reporting_to` sends each message (without the ``[pixart-batch]`` prefix) to it, and each progress
line as it is due (never rewritten in place).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

PREFIX = "[pixart-batch]"

_callback: Callable[[str], None] | None = None
"""Where the console's lines go instead of stderr (:func:`reporting_to`); None: stderr."""


@contextmanager
def reporting_to(callback: Callable[[str], None] | None) -> Iterator[None]:
    """Within the block, every line :func:`say` and :class:`Progress` would print to stderr is passed to
    ``callback`` (the message alone, no prefix); None: stderr as usual. Process-wide (the progress
    thread's lines included); the previous destination is restored on leaving."""
    global _callback
    previous, _callback = _callback, callback
    try:
        yield
    finally:
        _callback = previous


def say(message: str, stream: TextIO | None = None) -> None:
    callback = _callback
    if stream is None and callback is not None:
        callback(message)
        return
    print(f"{PREFIX} {message}", file=stream or sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Images done / total, images/s, ETA and failures of the generate phase."""

    def __init__(
        self,
        total: int,
        interval_s: float,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.interval_s = total, interval_s
        self.callback = _callback if stream is None else None
        self.stream = stream or sys.stderr
        self.clock = clock
        self.tty = self.callback is None and bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = clock()
        self.done = self.failed = 0
        self._shown_at: float | None = None
        self._shown_counts: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._open_line = False

    def line(self) -> str:
        elapsed = self.clock() - self.started
        finished = self.done + self.failed
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - finished) / (finished / elapsed)) if finished and elapsed > 0 else "?"
        percent = 100 * finished / self.total if self.total else 100.0
        return (
            f"{PREFIX} generate: {finished}/{self.total} images ({percent:.0f}%), {rate:.2f} images/s, "
            f"ETA {eta}, {self.failed} failed"
        )

    def update(self, done: int, failed: int, force: bool = False) -> None:
        """Set the counts (totals so far) and show the line if it is due."""
        with self._lock:
            self.done, self.failed = done, failed
            now = self.clock()
            due = self.interval_s if not self.tty else 0.5
            if not force and self._shown_at is not None and now - self._shown_at < due:
                return
            finished = done + failed >= self.total
            if (force or finished) and self._shown_counts == (done, failed):
                # The final counts are shown once (a terminal's log, `script`, would show a rewrite twice).
                return
            self._shown_at, self._shown_counts = now, (done, failed)
            if self.callback is not None:
                self.callback(self.line().removeprefix(PREFIX + " "))
                return
            if self.tty:
                self.stream.write("\r\033[K" + self.line())
                self._open_line = True
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def add(self, done: int, failed: int) -> None:
        self.update(self.done + done, self.failed + failed)

    def close(self) -> None:
        """The final counts, and the terminal's line ended."""
        self.update(self.done, self.failed, force=True)
        with self._lock:
            if self._open_line:
                self.stream.write("\n")
                self.stream.flush()
                self._open_line = False


class Poller:
    """Calls ``poll() -> (done, failed)`` every second on a thread and feeds a :class:`Progress`
    (the Ray executor: the counts live in the run's failure counter actor)."""

    def __init__(self, progress: Progress, poll: Callable[[], tuple[int, int]], every_s: float = 1.0) -> None:
        self.progress, self.poll, self.every_s = progress, poll, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixart-batch-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.progress.update(*self.poll())
            except Exception:  # the run itself reports what went wrong
                return

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
