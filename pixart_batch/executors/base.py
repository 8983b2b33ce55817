"""The interface every executor implements, the typed values its phases pass on, and the Ray-free
pieces the executors use (the failure counter, the monitored stage, what a run puts back in its process;
the batch functions are :mod:`pixart_batch.stages.rows`).

An executor carries out the phases of one run over a handle of its own kind (a Ray ``Dataset``, an
in-memory batch): :mod:`pixart_batch.run` calls them in order and passes each phase's result to the
next as a value. It is built from the run's :class:`~pixart_batch.execution.ExecutionSpec` alone (the
stages of each phase, their resources and constructor arguments) and reads no config. A new executor
is one module here and one line in :data:`pixart_batch.executors.EXECUTORS`.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar

from .. import schema as S
from ..batches import Batch
from ..errors import SystemicFailure, shorten
from ..execution import ExecutionSpec, FailureLimits

if TYPE_CHECKING:
    from ..output.formats import OutputFormat
    from ..output.writers import ImageWriter, ImageWriteResult, PlanWriter
    from ..store import EmbeddingStore, StoreWriter


# --------------------------------------------------------------------------- what the phases pass on


@dataclass(frozen=True)
class Cleaned:
    """The staged prompts, cleaned and sized (``prompts``: the executor's own handle)."""

    prompts: Any
    captions_empty: int
    captions_lost: int = 0
    """Prompts whose caption kept less than half of their letters and digits
    (:func:`~pixart_batch.stages.rows.lost_text`)."""
    lost_example: str | None = None
    """One of them (the greatest, so the same on every run)."""


@dataclass(frozen=True)
class ToEncode:
    """The distinct captions the store lacks (``rows``: the executor's own handle), ``count`` of them;
    ``reused``: those the store holds already."""

    rows: Any
    count: int
    reused: int


@dataclass(frozen=True)
class ToGenerate:
    """The images still to make (``rows``: the executor's handle, None when there are none; ``count``
    of them), sorted by bucket then caption key; ``planned`` images in all, per bucket in ``buckets``."""

    rows: Any
    planned: int
    count: int
    buckets: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    """A labelled run's planned images per class id."""


Honours = Mapping[str, Callable[[Any], bool] | None]
"""Stage settings an executor carries out: a pattern of dotted names (``stages.*.batch_size``) → None
(any value) or which values it honours."""


class Executor(ABC):
    """Carries out a run's phases. Built from the run's execution spec alone; holds no state between
    phases beyond what :meth:`start` sets up (a Ray connection), so the phases take and return values."""

    name: str
    honours: ClassVar[Honours] = {"stages.*": None}
    """The stage settings (:attr:`ExecutionSpec.changed`) this executor carries out; any other one that
    differs from its default is named by :func:`ignored_line`."""
    ignores_why: ClassVar[str] = ""
    """Why, for :func:`ignored_line`."""

    def __init__(self, execution: ExecutionSpec) -> None:
        self.execution = execution
        self._saved: ProcessState | None = None

    def ignored(self) -> list[str]:
        """The changed stage settings this executor does not carry out (dotted names)."""
        return [name for name, value in self.execution.changed if not honoured(self.honours, name, value)]

    def check(self) -> None:  # noqa: B027  # optional hook
        """Refuse, before anything is written, a run this executor cannot carry out here."""

    def start(self) -> None:
        """Set up what the phases need (after the output's lock is taken); what the process had before is
        kept for :meth:`close`."""
        self._saved = ProcessState()
        self.setup()

    def close(self) -> None:
        """Put back what the run changed in the process (called when the run ends, however it ends): the
        executor's own settings (:meth:`teardown`), then the environment variables and SIGTERM's handler."""
        try:
            self.teardown()
        finally:
            if self._saved is not None:
                self._saved.restore()
                self._saved = None

    def setup(self) -> None:  # noqa: B027  # optional hook
        """What :meth:`start` sets up (a Ray connection, its settings)."""

    def teardown(self) -> None:  # noqa: B027  # optional hook
        """Put back what :meth:`setup` changed (called by :meth:`close`, also after a failed start)."""

    @abstractmethod
    def check_resources(self) -> None:
        """Refuse a run whose stages need more than there is (after :meth:`start`, before staging)."""

    @abstractmethod
    def clean(self, chunks: list[str], output_fs: Any) -> Cleaned:
        """Read the staged prompt chunks, clean the captions and size each prompt
        (:func:`~pixart_batch.stages.rows.clean_and_size`)."""

    @abstractmethod
    def to_encode(self, cleaned: Cleaned, store: EmbeddingStore) -> ToEncode:
        """The distinct captions (and negative prompts, with CFG) the store does not hold, sorted by key."""

    @abstractmethod
    def encode(self, captions: ToEncode, writer: StoreWriter) -> None:
        """T5 over ``captions`` into committed store parts (as batches finish)."""

    @abstractmethod
    def to_generate(
        self, cleaned: Cleaned, writer: PlanWriter, shards: OutputFormat, dry_run: bool
    ) -> ToGenerate:
        """The images still to make: expand prompts into images, write the plan (through ``writer``), drop
        the keys ``shards`` holds, and (unless ``dry_run``) sort by bucket, then caption key."""

    @abstractmethod
    def generate(
        self, images: ToGenerate, store: EmbeddingStore, writer: ImageWriter, limits: FailureLimits
    ) -> ImageWriteResult:
        """Embeddings → DiT → VAE → encoded images → committed shards; stops with :class:`SystemicFailure`."""


# --------------------------------------------------------------------------- shared, Ray-free


def honoured(honours: Honours, name: str, value: Any) -> bool:
    """Whether a setting ``name`` = ``value`` is one that ``honours`` carries out."""
    for pattern, accepts in honours.items():
        if fnmatchcase(name, pattern) and (accepts is None or accepts(value)):
            return True
    return False


def ignored_line(executor: Executor) -> str | None:
    """The one warning line naming the stage settings ``executor`` cannot honour (None: it honours all)."""
    names = executor.ignored()
    if not names:
        return None
    why = f" ({executor.ignores_why})" if executor.ignores_why else ""
    return f"warning: the {executor.name} executor ignores {', '.join(names)}{why}"


class ProcessState:
    """What a run may change in its process besides the executor's own settings, taken when it starts and
    put back when it ends: the environment variables (a stage's, e.g. the compile path's
    ``TORCHINDUCTOR_CACHE_DIR``; ``ray.init``'s ``PYTHONBREAKPOINT``) and SIGTERM's handler (``ray.init``
    replaces it, :func:`pixart_batch.signals.install_signal_handlers` then installs the run's)."""

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        main = threading.current_thread() is threading.main_thread()
        self.sigterm = signal.getsignal(signal.SIGTERM) if main else None

    def restore(self) -> None:
        for name in [name for name in os.environ if name not in self.environ]:
            del os.environ[name]
        for name, value in self.environ.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        if self.sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.sigterm)


class FailureCounter:
    """Counts finished and failed images across every actor of the run; says when to stop."""

    def __init__(self, max_consecutive: int, max_rate: float, rate_after: int) -> None:
        self.max_consecutive, self.max_rate, self.rate_after = max_consecutive, max_rate, rate_after
        self.ok = self.failed = self.consecutive = 0
        self.errors: Counter = Counter()

    def counts(self) -> tuple[int, int]:
        """Images finished so far: (made, failed)."""
        return self.ok, self.failed

    def record(self, ok: int, errors: list[str]) -> str | None:
        """Outcomes of one batch (failures first, then successes); a stop message, or None."""
        for error in errors:
            self.failed += 1
            self.consecutive += 1
            self.errors[error_kind(error)] += 1
        if ok:
            self.ok += ok
            self.consecutive = 0
        finished = self.ok + self.failed
        rate = self.failed / finished if finished else 0.0
        if self.failed and (
            self.consecutive >= self.max_consecutive or (finished >= self.rate_after and rate > self.max_rate)
        ):
            error, count = self.errors.most_common(1)[0]
            return (
                f"stopped: {self.failed} of {finished} images failed ({self.consecutive} in a row; limits: "
                f"failures.max_consecutive {self.max_consecutive}, failures.max_rate {self.max_rate:g}); "
                f"most common error ({count}x): {error} — committed images are kept; fix the cause and "
                "re-run the same command to resume"
            )
        return None


Counts = tuple[int, int, int, dict[str, int]]
"""A counter's state: (made, failed, failed in a row, failures per kind of error)."""


class PolledCounter(FailureCounter):
    """The counter of a run whose counter may restart empty (the Ray executor's, an actor): whoever polls it
    keeps the counts it saw last and hands them back with each :meth:`poll`; a counter polled for the first
    time since it (re)started adds them to its own, so the progress line and the failure limits carry on."""

    def __init__(self, max_consecutive: int, max_rate: float, rate_after: int) -> None:
        super().__init__(max_consecutive, max_rate, rate_after)
        self.fresh = True  # started or restarted, not polled yet

    def poll(self, seen: Counts | None) -> Counts:
        if self.fresh and seen is not None:
            ok, failed, consecutive, errors = seen
            self.consecutive = self.consecutive if self.ok else consecutive + self.consecutive
            self.ok, self.failed = self.ok + ok, self.failed + failed
            self.errors.update(errors)
        self.fresh = False
        return self.ok, self.failed, self.consecutive, dict(self.errors)


def error_kind(error: str) -> str:
    """An error message without what varies per image (keys, numbers), to find the most common cause."""
    return shorten(re.sub(r"\bp[0-9a-f]{16}(-\d+)?(-\d{5})?\b", "<key>", error), 300)


def monitored(stage_cls: type, record: Callable[[int, list[str]], str | None], report_success: bool) -> type:
    """The stage class, reporting each batch's new failures (and, for the last model stage, its
    successes) to the run's :class:`FailureCounter` through ``record``; raises :class:`SystemicFailure`
    when told to stop. Keeps the stage's name (Ray shows it as ``MapBatches(<name>)``)."""

    class Monitored(stage_cls):
        def __call__(self, batch: Batch) -> Batch:
            failed_before = batch[S.ERROR].astype(bool).copy()
            out = super().__call__(batch)
            new = [str(e) for e, was in zip(out[S.ERROR], failed_before, strict=True) if e and not was]
            ok = int(sum(1 for e in out[S.ERROR] if not e)) if report_success else 0
            verdict = record(ok, new)
            if verdict:
                raise SystemicFailure(verdict)
            return out

    Monitored.__name__ = Monitored.__qualname__ = stage_cls.__name__
    return Monitored
