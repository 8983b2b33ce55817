"""The Ray executor's setup: joining or starting Ray (:func:`init_ray`) and the run's Ray Data settings
(:func:`configure_data_context`), each with what puts the process back when the run ends.

Ray stays up after a run, for a later run in the same process (its own process state with it: the SIGTERM
handler and ``PYTHONBREAKPOINT`` it sets are put back by :class:`~.base.ProcessState`, its loggers are its
own). Its native log lines stay diverted to Ray's log directory for the life of the process: the file
descriptor cannot be handed back while Ray's threads write to it. Every Ray Data setting a run changes
(:data:`CONTEXT_FIELDS`, ``execution_options.preserve_order``, the ``ray.data`` logger's level) is put back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray

from ..errors import UserError
from ..progress import say
from ..streams import divert_native_stderr, no_colour_reset_at_exit

if TYPE_CHECKING:
    from ..execution import ExecutionSpec


def init_ray(execution: ExecutionSpec) -> None:
    """Join ``ray.address`` or ``RAY_ADDRESS`` (set by ``ray job submit``), else start a private local
    instance (``address="local"``: never silently join some other Ray running on this machine)."""
    from ..signals import install_signal_handlers

    # the test suite's guard: tests not marked slow start no Ray
    if os.environ.get("PIXART_BATCH_FORBID_RAY"):
        raise UserError("PIXART_BATCH_FORBID_RAY is set: this run may not use Ray (a test not marked slow)")
    if ray.is_initialized():
        return
    settings, verbose = execution.ray, execution.verbose
    address = settings.address or os.environ.get("RAY_ADDRESS")
    # Quiet unless --verbose: what Ray writes on the driver's stderr (its INFO and WARNING lines,
    # the core worker's C++ log lines such as the actor-constructor notice) goes to a file in Ray's
    # log directory; the run speaks through its phase lines and its progress line.
    diverted = None if verbose else divert_native_stderr()
    no_colour_reset_at_exit()
    kwargs: dict[str, Any] = {"log_to_driver": verbose}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=settings.num_cpus, include_dashboard=False, **kwargs)
    if diverted is not None:
        where = settle_native_stderr(diverted)
        say(f"Ray's log lines: {where} (--verbose shows them here)")
    install_signal_handlers()  # ray.init replaced SIGTERM's handler with its own sys.exit


def settle_native_stderr(path: str) -> str:
    """Move the diverted stderr file into Ray's log directory once Ray has one; returns where it is."""
    import shutil

    try:
        node = (
            ray._private.worker.global_worker.node
        )  # Ray has no public accessor of the driver's log directory
        assert node is not None
        logs = node.get_logs_dir_path()
        target = os.path.join(logs, f"pixart-batch-driver-{os.getpid()}.err")
        with open(target, "ab") as out, open(path, "rb") as early:
            shutil.copyfileobj(early, out)
            os.dup2(out.fileno(), 2)
        os.unlink(path)
        return target
    except Exception:
        return path


CONTEXT_FIELDS: tuple[str, ...] = ("enable_progress_bars", "print_on_execution_start", "max_errored_blocks")
CONTEXT_FIELDS += ("raise_original_map_exception", "execution_no_progress_timeout_s")
"""The ``DataContext`` settings a run changes (and puts back when it ends: a later run or caller in the
same process sees Ray's as they were)."""


def configure_data_context(execution: ExecutionSpec) -> Callable[[], None]:
    """Set the run's Ray Data settings; returns what puts them back (with ``preserve_order``, which the
    encode phase sets while it runs)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved, level = {name: getattr(context, name) for name in CONTEXT_FIELDS}, logger.level
    options = context.execution_options
    preserve_order = options.preserve_order

    def restore() -> None:
        for name, value in saved.items():
            setattr(context, name, value)
        context.execution_options = options
        options.preserve_order = preserve_order
        logger.setLevel(level)

    verbose = execution.verbose
    context.enable_progress_bars = verbose
    if not verbose:
        context.print_on_execution_start = False  # the "Execution plan" lines
        logger.setLevel(logging.WARNING)
    # Retries: Ray Data's defaults are what a long batch job wants and are relied on here —
    # actor-pool actors restart without limit and their in-flight tasks are retried
    # (max_restarts=-1, max_task_retries=-1), tasks lost with a node are re-run. Exceptions
    # raised by our own stage code are not retried by Ray: the stages retry each failing
    # image alone and turn what still fails into failure rows (see stages/common.py), so a
    # map task never fails because of one image and no block is ever dropped.
    context.max_errored_blocks = 0
    # A stage's own exception (SystemicFailure, a full disk) reaches the driver as itself, not as
    # Ray Data's UserCodeException wrapper, so the CLI can print its one line.
    context.raise_original_map_exception = True
    # A deadlock (e.g. actors holding every CPU) must fail the run instead of hanging it.
    context.execution_no_progress_timeout_s = execution.ray.no_progress_timeout_s
    return restore
