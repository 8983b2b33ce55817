"""The Python API: one function per command, the same work and the same results as the CLI.

::

    import pixart_batch

    report = pixart_batch.generate("prompts.txt", "out", config="configs/tiny.yaml", seed=3)
    print(report.images_generated, report.as_json())

Every function takes typed arguments and returns a typed result (a dataclass with ``to_dict()`` and
``as_json()``: what the CLI prints and ``--json`` writes). Conventions:

- ``config``: a :class:`~pixart_batch.config.RunConfig`, the path of a YAML recipe, or None (the
  defaults, ``RunConfig()``: the real PixArt-α checkpoint, not the tiny one).
- ``**overrides``: the CLI's flag names (``seed=3``, ``steps=4``, ``batch_size=8``, ``model="tiny"``,
  ``executor="local"``; see :data:`OVERRIDES`) or any config key with ``__`` for its dots
  (``generation__guidance_scale=1.0``); ``options={"generation.seed": 3}`` gives dotted keys as a dict.
  None values are ignored.
- ``prompts``: a path or ``hf://datasets/...`` string, a :class:`~pixart_batch.prompts.PromptSource`,
  or a ``datasets.Dataset`` / ``IterableDataset`` object. A dataset object is first streamed, in batches
  (flat memory), into a Parquet file in a temporary directory that is removed when the call returns:
  one extra write and read of its columns; ids are derived from the rows' content as for any file.
  ``prompt_column=``, ``id_column=``, ``label_column=``, ``negative_prompt_column=`` map the columns.
- ``progress``: None prints the phase and progress lines on stderr (as the CLI does); a callable
  receives each line instead (a ``str``, without the ``[pixart-batch]`` prefix).
- Errors a user can act on are :class:`pixart_batch.UserError` (its message: the CLI's one line, which
  the CLI prints as ``pixart-batch: error: <message>`` with exit status 2). Nothing here calls
  ``sys.exit`` or installs a signal handler; logging is left as the caller set it up.
- A second call in the same process works: a Ray instance the first call started is reused (its
  settings, e.g. ``ray.num_cpus``, are the first call's); ``ray.shutdown()`` between calls starts afresh.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .config_tables import OVERRIDES  # each flag's config keys, declared on the fields (setting(flag=...))
from .errors import UserError

if TYPE_CHECKING:
    from .audit import Verification
    from .config import RunConfig
    from .estimate import Estimate
    from .export import ExportResult
    from .gallery.build import GalleryResult
    from .prompts import PromptSource
    from .rescore import ScoreResult
    from .run.report import RunReport

__all__ = [
    "OVERRIDES",
    "StatusReport",
    "encode",
    "export",
    "gallery",
    "generate",
    "load_run_config",
    "plan",
    "score",
    "status",
    "verify",
]

Prompts = Any
"""A path / ``hf://`` string, an ``os.PathLike``, a :class:`PromptSource`, or a ``datasets`` dataset."""
Progress = Callable[[str], None] | None
PathLike = str | os.PathLike[str]
ConfigLike = Any
"""A :class:`RunConfig`, the path of a YAML recipe (``str`` / ``os.PathLike``), or None (the defaults)."""

DATASET_BATCH_ROWS = 10_000
"""Rows per batch when a ``datasets`` object is streamed into the temporary Parquet file."""


# --------------------------------------------------------------------------- results


class _Result:
    """``to_dict()`` and ``as_json()`` for a result dataclass."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def as_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)


_RESULT_CLASSES: dict[type, type] = {}
R = TypeVar("R")


def _result(value: R) -> R:
    """``value`` (a dataclass instance) as an instance of a subclass of its class that adds
    :class:`_Result`'s methods (same name, same fields, ``isinstance`` still holds)."""
    base = type(value)
    if not hasattr(base, "as_json"):
        cls = _RESULT_CLASSES.get(base)
        if cls is None:
            cls = type(base.__name__, (base, _Result), {"__module__": base.__module__})
            _RESULT_CLASSES[base] = cls
        fields = dataclasses.fields(value)  # type: ignore[arg-type]
        return cls(**{f.name: getattr(value, f.name) for f in fields if f.init})
    return value


@dataclasses.dataclass(frozen=True)
class StatusReport:
    """``pixart-batch status``: ``data`` is what ``status --json`` prints (per bucket: planned /
    embedded / done / failed images and totals, damaged shards, ``running``); ``str()`` is the table."""

    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def as_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.data, indent=indent)

    def __str__(self) -> str:
        from .audit import format_status

        return format_status(self.data)


# --------------------------------------------------------------------------- arguments


Options = Mapping[str, Any] | None
"""Dotted config keys and their values (``{"generation.seed": 3}``)."""


def load_run_config(config: ConfigLike = None, options: Options = None, **overrides: Any) -> RunConfig:
    """``config`` (a :class:`RunConfig`, a YAML path or None) with ``options`` (dotted keys) and
    ``overrides`` (flag names, or config keys with ``__`` for dots) applied; checked as a recipe is."""
    from .config import RunConfig, load_config, with_overrides

    base = config if isinstance(config, RunConfig) else load_config(config)
    dotted: dict[str, Any] = dict(options or {})
    for name, value in overrides.items():
        for key in OVERRIDES.get(name, (name.replace("__", "."),)):
            dotted[key] = value
    return with_overrides(base, dotted) if dotted else base


def _columns(prompt: str | None, id_: str | None, label: str | None, negative: str | None) -> dict:
    given = {"prompt_column": prompt, "id_column": id_, "label_column": label}
    given["negative_prompt_column"] = negative
    return {name: value for name, value in given.items() if value is not None}


def _is_dataset(value: object) -> bool:
    """A ``datasets.Dataset`` / ``IterableDataset`` (told without importing ``datasets``)."""
    names = ("Dataset", "IterableDataset")
    classes = type(value).__mro__
    return any(cls.__module__.startswith("datasets.") and cls.__name__ in names for cls in classes)


def _write_parquet(dataset: Any, path: str) -> None:
    """Stream ``dataset``'s rows into a Parquet file, :data:`DATASET_BATCH_ROWS` at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for batch in dataset.with_format("arrow").iter(batch_size=DATASET_BATCH_ROWS):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise UserError("the prompts dataset has no rows: no prompts")


@contextmanager
def prompt_source(prompts: Prompts, **columns: str) -> Iterator[PromptSource]:
    """``prompts`` as a :class:`PromptSource` with ``columns`` mapped, for the length of the block (a
    ``datasets`` object: a temporary Parquet file, removed on leaving)."""
    from .prompts import PromptSource

    if isinstance(prompts, PromptSource):
        yield dataclasses.replace(prompts, **columns) if columns else prompts
    elif _is_dataset(prompts):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pixart-batch-prompts-") as folder:
            path = os.path.join(folder, "prompts.parquet")
            _write_parquet(prompts, path)
            yield PromptSource(path, **columns)
    elif isinstance(prompts, (str, os.PathLike)):
        yield PromptSource(os.fsdecode(prompts), **columns)
    else:
        kinds = "a path, an hf://datasets/ id, a PromptSource or a datasets.Dataset"
        raise UserError(f"prompts: give {kinds} (got {type(prompts).__name__})")


# --------------------------------------------------------------------------- errors


def user_cause(exc: BaseException) -> BaseException:
    """The error that matters inside Ray's wrappers (a stage's exception arrives as a RayTaskError /
    UserCodeException chain): the first of ours, or an out-of-space error, else ``exc`` itself."""
    from .errors import SystemicFailure
    from .storage import StorageFullError

    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        ours = type(current).__module__.startswith("pixart_batch")
        if isinstance(current, (UserError, SystemicFailure, StorageFullError)) and ours:
            return current
        for attribute in ("cause", "__cause__", "__context__"):
            inner = getattr(current, attribute, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
    return _cause_from_text(exc)


def _cause_from_text(exc: BaseException) -> BaseException:
    """Ray can carry a worker's exception chain as text only (pickling drops ``__cause__``): find our
    error's class and message in it."""
    import errno
    import re

    from . import errors, storage

    found = re.findall(r"pixart_batch\.(errors|storage)\.(\w+): (.+)", str(exc))
    for module_name, class_name, message in found:
        cls = getattr(errors if module_name == "errors" else storage, class_name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(errno.ENOSPC, message) if cls is storage.StorageFullError else cls(message)
    return exc


def ray_token_error(exc: BaseException) -> str | None:
    """Ray's ``AuthenticationError`` (``RAY_AUTH_MODE=token`` and no token here, or not the cluster's) as
    one line naming what to set; None for any other error. Ray itself is not imported for this."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        if type(current).__name__ == "AuthenticationError" and type(current).__module__.startswith("ray"):
            wrong = "invalid" in str(current)
            what = "this token is not the cluster's" if wrong else "no token found"
            return (
                f"Ray token authentication (RAY_AUTH_MODE=token): {what}; set RAY_AUTH_TOKEN_PATH to a file "
                "holding the head's token (or RAY_AUTH_TOKEN to the token)"
            )
        current = current.__cause__ or current.__context__
    return None


THIRD_PARTY_WARNINGS: tuple[tuple[str, str], ...] = (
    # diffusers' DPM-Solver turns a torch tensor into a numpy array the NumPy 2 way it deprecates
    (r"__array__ implementation doesn't accept a copy keyword", r"diffusers\."),
)
"""(message, module) regular expressions of warnings third-party code raises inside a run and that are
nothing a caller did: ignored during a call, so a caller's ``-W error`` does not fail images."""


@contextmanager
def _calling(progress: Progress) -> Iterator[None]:
    """A command's body: its lines to ``progress`` (None: stderr), :data:`THIRD_PARTY_WARNINGS` ignored,
    and an error wrapped by Ray raised as the error of ours inside it (a user error: :class:`UserError`,
    the CLI's message)."""
    import warnings

    from .progress import reporting_to

    try:
        with reporting_to(progress), warnings.catch_warnings():
            for message, module in THIRD_PARTY_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning, module=module)
            yield
    except Exception as exc:
        cause = user_cause(exc)
        if cause is not exc:
            raise cause from exc
        token = ray_token_error(exc)
        if token:
            raise UserError(token) from exc
        raise


# --------------------------------------------------------------------------- commands


def _run(given: Prompts, out: PathLike, cfg: RunConfig, cols: dict, log: Progress, **how: bool) -> RunReport:
    """``generate`` / ``encode`` (``how``: ``run_generate``'s ``encode_only`` / ``dry_run``)."""
    from .run import run_generate
    from .run.report import RunReport

    with _calling(log), prompt_source(given, **cols) as source:
        report = run_generate(cfg, source, os.fsdecode(out), **how)
    names = {f.name for f in dataclasses.fields(RunReport)}
    return _result(RunReport(**{key: value for key, value in report.items() if key in names}))


def generate(
    prompts: Prompts,
    output: PathLike,
    *,
    config: ConfigLike = None,
    dry_run: bool = False,
    progress: Progress = None,
    prompt_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    negative_prompt_column: str | None = None,
    options: Options = None,
    **overrides: Any,
) -> RunReport:
    """``pixart-batch generate``: prompts → embedding store → images → the sharded dataset ``output``.
    Returns the run report (``run_report.json``; ``images_failed`` > 0: re-run to retry them, the CLI's
    exit status 1). ``dry_run``: validate, clean and plan only."""
    run_config = load_run_config(config, options, **overrides)
    columns = _columns(prompt_column, id_column, label_column, negative_prompt_column)
    return _run(prompts, output, run_config, columns, progress, dry_run=dry_run)


def encode(
    prompts: Prompts,
    output: PathLike,
    *,
    config: ConfigLike = None,
    progress: Progress = None,
    prompt_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    negative_prompt_column: str | None = None,
    options: Options = None,
    **overrides: Any,
) -> RunReport:
    """``pixart-batch encode``: only the embedding store of ``output`` (no plan, no images)."""
    run_config = load_run_config(config, options, **overrides)
    columns = _columns(prompt_column, id_column, label_column, negative_prompt_column)
    return _run(prompts, output, run_config, columns, progress, encode_only=True)


def plan(
    prompts: Prompts,
    *,
    config: ConfigLike = None,
    prompt_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    negative_prompt_column: str | None = None,
    options: Options = None,
    **overrides: Any,
) -> Estimate:
    """``pixart-batch plan``: images per bucket, GPU-hours, cost and sizes of a run, before it starts
    (``str()`` of :func:`pixart_batch.estimate.format_estimate` is the table; ``to_dict()`` the JSON)."""
    from .estimate import estimate_run

    run_config = load_run_config(config, options, **overrides)
    columns = _columns(prompt_column, id_column, label_column, negative_prompt_column)
    with _calling(None), prompt_source(prompts, **columns) as source:
        return _result(estimate_run(run_config, source))


def status(output: PathLike) -> StatusReport:
    """``pixart-batch status``: planned / embedded / done / failed images per bucket."""
    from .audit import status as audit_status

    with _calling(None):
        return StatusReport(audit_status(os.fsdecode(output)))


def verify(output: PathLike) -> Verification:
    """``pixart-batch verify``: every file, key, sha256 and planned image checked; ``lines()`` are the
    findings the CLI prints and ``exit_code`` its exit status (0 OK, 1 FAILED, 3 IN PROGRESS)."""
    from .audit import verify as audit_verify

    with _calling(None):
        return _result(audit_verify(os.fsdecode(output)))


def export(
    source: PathLike,
    where: str,
    to: PathLike,
    *,
    format: str | None = None,
    per_label: int | None = None,
    progress: Progress = None,
) -> ExportResult:
    """``pixart-batch export``: the rows of ``source`` that satisfy ``where`` (at most ``per_label`` per
    class), as a new dataset in ``to`` (``format``: parquet or webdataset; default the source's)."""
    from .export import export as export_rows

    with _calling(progress):
        made = export_rows(os.fsdecode(source), where, os.fsdecode(to), format, per_label)
    return _result(made)


def score(
    output: PathLike,
    *,
    config: ConfigLike = None,
    model: str | None = None,
    revision: str | None = None,
    aesthetic_head: str | None = None,
    batch_size: int | None = None,
    progress: Progress = None,
) -> ScoreResult:
    """``pixart-batch score``: ``clip_score`` (and ``aesthetic_score`` with a head) added to every shard of
    ``output`` that has none yet; the rest of ``stages.score`` (dtype, device) comes from ``config``."""
    from .rescore import score_output

    given = {"model": model, "revision": revision, "aesthetic_head": aesthetic_head, "batch_size": batch_size}
    options = {f"stages.score.{key}": value for key, value in given.items()}
    stage = load_run_config(config, options).stages.score
    how = (stage.revision, stage.aesthetic_head, stage.batch_size, stage.dtype, stage.device)
    with _calling(progress):
        made = score_output(os.fsdecode(output), stage.model, *how)
    return _result(made)


def gallery(
    output: PathLike,
    *,
    per_bucket: int = 48,
    max_images: int = 2000,
    thumb_size: int = 256,
    format: str = "webp",
    where: str | None = None,
) -> GalleryResult:
    """``pixart-batch gallery``: a static HTML gallery of a sample of the images in ``OUTPUT/gallery/``
    (``where``: preview an export, what it keeps and drops)."""
    from .gallery import build_gallery

    with _calling(None):
        made = build_gallery(os.fsdecode(output), per_bucket, max_images, thumb_size, format, where)
    return _result(made)
