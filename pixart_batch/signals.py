"""Signal handling shared by the CLI and the executors (Ray-free)."""

from __future__ import annotations

from types import FrameType


class Terminated(BaseException):
    """SIGTERM (``kill``, ``ray job stop``, a scheduler's preemption): stop like Ctrl-C. A
    ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` on the way (Ray Data's
    included) logs it as an error."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """SIGTERM raises :class:`Terminated` in the main thread (Ray's driver handler would ``sys.exit``
    with a stack dump). Called again after ``ray.init``, which installs its own."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
