"""The console's streams around a Ray run (Ray-free): Ray's native log lines kept off the terminal,
and no colour reset written after the summary line."""

from __future__ import annotations

import os
import sys


def no_colour_reset_at_exit() -> None:
    """Ray's CLI logger calls ``colorama.init()`` when it is imported (during a run), which registers
    an exit handler that writes ``ESC[0m`` on the terminal after the summary line: mark colorama's
    handler as registered already (and drop it if it is)."""
    import atexit

    initialise = getattr(sys.modules.get("colorama"), "initialise", None)
    if initialise is None:
        return
    if getattr(initialise, "atexit_done", False):
        atexit.unregister(initialise.reset_all)
    initialise.atexit_done = True


def divert_native_stderr() -> str | None:
    """Point file descriptor 2 at a temporary file and ``sys.stderr`` at the real stderr: Python
    code (ours, tracebacks) still reaches the console, native and Ray-logger writes do not.
    None when stderr is not a real file (e.g. captured by a test)."""
    import tempfile

    try:
        sys.stderr.flush()
        real = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    handle, path = tempfile.mkstemp(prefix="pixart-batch-ray-", suffix=".log")
    sys.stderr = os.fdopen(real, "w", buffering=1, errors="backslashreplace")
    os.dup2(handle, 2)
    os.close(handle)
    return path
