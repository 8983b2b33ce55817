"""The run as an application: a prepared run (:class:`PreparedRun`: everything checked, nothing written),
then :func:`execute` carries it out with an executor, phase by phase, each phase's result passed on
as a value.

Order: :func:`prepare_run` validates the prompt file (a streaming pass), the checkpoint and its classes
(→ ``RunSpec``), sizes and steps, that the output is ours, its metadata and the settings guard, and
what the executor can do here → :func:`execute` starts the executor (Ray) and checks its resources →
opens the output session (:class:`~pixart_batch.output.session.OutputSession`: the lock, the marker, the
guard re-checked, the output checked writable) → cleans its own temporaries,
writes ``settings.json`` and the store pointer, sets damaged files aside, stages the prompt chunks →
clean → encode (distinct captions minus the store) → plan (images minus committed keys, sorted by
bucket) → generate → the card → the report → releases the lock.

Nothing to do costs little: a re-run of a finished job (:func:`prepare_unchanged_run`: the last run's report
says it finished the latest plan from these prompt bytes, and the settings this run would record — the
checkpoint's file digests included — are the output's) is planned from the output's files and the
checkpoint's configs alone, importing no torch, diffusers or Ray; :func:`execute` then takes the lock,
checks again that every planned image is committed in a shard that reads whole and every caption is in
the store (:func:`~.checks.left_to_do`), and writes only the report and ``run_config.json``. Whatever
is left, or any doubt, sends the run through the full checks and the executor, as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import schema as S
from ..config import RunConfig, config_json
from ..errors import UserError, first_line
from ..execution import ExecutionSpec
from ..executors import choose_executor, make_executor
from ..executors.base import Cleaned, Executor, ignored_line
from ..fast import check_fast_modes
from ..output import OutputDataset
from ..output.guard import check_settings, label_names
from ..output.layout import CONFIG_FILE, DRY_RUN_REPORT_FILE, RECREATE, STORE_DIR, STORE_POINTER_FILE
from ..output.relations import check_relations
from ..output.session import OutputSession, new_run_id
from ..output.staging import stage_prompts
from ..output.writers import ImageWriter, PlanWriter
from ..ownership import check_ours
from ..progress import say
from ..prompts import scan_prompts
from ..spec import RunSpec
from ..storage import nested_roots
from ..store import EmbeddingStore, StoreIdentity, StoreWriter
from .checks import (
    Left,
    card_settings_warning,
    check_quantization,
    check_sizes,
    damaged_files,
    finished_report,
    left_to_do,
    prompt_bytes,
)
from .report import CAPTIONS_NOTE, RunReport, lost_line, summary

if TYPE_CHECKING:
    from ..prompts import Prompts, PromptScan


@dataclass(frozen=True)
class PreparedRun:
    """Everything a run needs, checked; nothing written yet."""

    config: RunConfig
    spec: RunSpec
    execution: ExecutionSpec
    """What the executor is given (:meth:`RunSpec.execution`; for a run with nothing left to do, the
    resources only: it is never given to an executor)."""
    scan: PromptScan
    identity: StoreIdentity
    output_uri: str
    store_root: str
    executor: str
    run_id: str
    started: float
    encode_only: bool = False
    dry_run: bool = False
    label_names: tuple[str, ...] | None = None
    """A labelled run's class names, in id order (the output's earlier ones first)."""
    finished: dict[str, Any] | None = None
    """The output's last run report when this run looks to have nothing left to do
    (:func:`prepare_unchanged_run`; ``spec`` is then a light one): :func:`execute` checks under the lock
    and starts nothing. None: the full run, carried out by the executor."""

    def output(self) -> OutputDataset:
        return OutputDataset(self.output_uri, self.config.output.format)

    def settings(self) -> dict[str, Any]:
        """What determines the images (:meth:`RunSpec.settings`), and a labelled run's class names."""
        return with_labels(self.spec.settings(), self.label_names)


def with_labels(settings: dict[str, Any], names: tuple[str, ...] | list[str] | None) -> dict[str, Any]:
    return settings if names is None else {**settings, S.LABEL_NAMES_SETTING: list(names)}


def prepare_run(
    config: RunConfig,
    prompts: Prompts,
    output: str,
    encode_only: bool = False,
    dry_run: bool = False,
) -> PreparedRun:
    """Check everything that can be checked without writing; returns the prepared run (for a re-run
    with nothing left to do, :func:`prepare_unchanged_run`'s)."""
    started = time.time()
    scan = scan_prompts(prompts)
    if not (encode_only or dry_run):
        unchanged = prepare_unchanged_run(config, scan, output, started)
        if unchanged is not None:
            return unchanged
    return prepare_full_run(config, scan, output, started, encode_only, dry_run)


def prepare_full_run(
    config: RunConfig,
    scan: PromptScan,
    output: str,
    started: float,
    encode_only: bool = False,
    dry_run: bool = False,
) -> PreparedRun:
    """A run prepared for the executor: the checkpoint and its weights, every check."""
    if config.model.clean_caption:
        from ..stages.clean import require_cleaning_dependencies

        require_cleaning_dependencies()
    check_quantization(config)
    check_fast_modes(config)
    spec = RunSpec.build(config)
    check_sizes(spec, scan)
    target = OutputDataset(output, config.output.format)
    store_root = config.output.store or target.location.child(STORE_DIR).uri
    check_relations(target.uri, store_root, scan.path, checkpoint_folders(spec))
    check_ours(target.location)
    target.validate_metadata()
    names = label_names(target, scan.labels)
    check_settings(target, with_labels(spec.settings(), names))
    identity = spec.store_identity()  # hashes the encoder's files: once
    EmbeddingStore(store_root, identity).check()
    execution = spec.execution()
    executor = choose_executor(execution, scan.count * config.generation.images_per_prompt)
    make_executor(executor, execution).check()
    return PreparedRun(
        config=config,
        spec=spec,
        execution=execution,
        scan=scan,
        identity=identity,
        output_uri=target.uri,
        store_root=store_root,
        executor=executor,
        run_id=new_run_id(),
        started=started,
        encode_only=encode_only,
        dry_run=dry_run,
        label_names=None if names is None else tuple(names),
    )


def prepare_unchanged_run(
    config: RunConfig, scan: PromptScan, output: str, started: float
) -> PreparedRun | None:
    """A re-run prepared that looks to have nothing left to do, from the output's files and the
    checkpoint's configs and file digests (no torch, diffusers or Ray); None for any other run.

    It looks so when the output is ours, its last run report finished the latest plan from the bytes this
    run's scan read (:func:`~.checks.finished_report`), and the settings this run would record — checkpoint
    and encoder digests, every image and embedding setting, class names — and its store pointer are the
    output's, exactly. Any error (a damaged file, a bad checkpoint) is None: the full checks then say
    what is wrong, in their order. Scoring (``stages.score``) always takes the full path: the score
    model's identity needs torch."""
    if config.stages.score.enabled:
        return None
    target = OutputDataset(output, config.output.format)
    try:
        if not check_ours(target.location):
            return None
        target.validate_metadata()
        previous = finished_report(target, scan)
        if previous is None:
            return None
        spec = RunSpec.build(config, light=True)
        check_sizes(spec, scan)
        store_root = config.output.store or target.location.child(STORE_DIR).uri
        check_relations(target.uri, store_root, scan.path, checkpoint_folders(spec))
        names = label_names(target, scan.labels)
        execution = ExecutionSpec.build(config)  # resources only: a light spec builds no stage
        run = PreparedRun(
            config=config,
            spec=spec,
            execution=execution,
            scan=scan,
            identity=spec.store_identity(),
            output_uri=target.uri,
            store_root=store_root,
            executor=choose_executor(execution, scan.count * config.generation.images_per_prompt),
            run_id=new_run_id(),
            started=started,
            label_names=None if names is None else tuple(names),
            finished=previous,
        )
        return run if records_this_run(target, run) else None
    except (UserError, OSError, ValueError):
        return None


def records_this_run(output: OutputDataset, run: PreparedRun) -> bool:
    """Whether ``output`` records exactly ``run``'s settings and store, and its last run finished the
    latest plan from the run's prompt bytes (read again under the lock: another run may change them)."""
    if finished_report(output, run.scan) is None or output.read_settings() != run.settings():
        return False
    pointer = output.read_object(STORE_POINTER_FILE, {"uri": str}, "store pointer", RECREATE)
    store = EmbeddingStore(run.store_root, run.identity)
    return pointer is not None and pointer["uri"] == store_pointer(output, store)


def checkpoint_folders(spec: RunSpec) -> list[str]:
    """The local folders the run reads its model from (the checkpoint's, and any
    ``model.components_from``)."""
    model = spec.model
    return sorted({str(model.local_dir)} | ({str(model.base.local_dir)} if model.base is not None else set()))


def run_generate(
    config: RunConfig, prompts: Prompts, output: str, encode_only: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """The whole pipeline (or only the embedding store with ``encode_only``, or only the plan with
    ``dry_run``); returns the run report."""
    return execute(prepare_run(config, prompts, output, encode_only=encode_only, dry_run=dry_run))


def execute(run: PreparedRun, log: Callable[[str], None] = say) -> dict[str, Any]:
    """Carry out ``run`` in an output session; returns the run report (also in ``run_report.json``).
    A run with nothing left to do (:attr:`PreparedRun.finished`) starts no executor, unless the output
    turns out, under the lock, to lack something: then the full run is prepared and carried out."""
    if run.finished is not None:
        report = finish_unchanged(run, log)
        if report is not None:
            return report
        run = prepare_full_run(run.config, run.scan, run.output_uri, run.started)
    output = run.output()
    warning = None if run.encode_only else card_settings_warning(run.spec)
    if warning:
        log(warning)
    executor = make_executor(run.executor, run.execution)
    ignored = ignored_line(executor)  # stage settings this executor cannot honour: one line names them
    if ignored:
        log(ignored)
    try:
        # Ray started and its resources checked before the output is touched: a refusal leaves nothing behind.
        executor.start()
        executor.check_resources()
        with OutputSession(output, run.run_id, inputs=(run.scan.path,), log=log) as session:
            # Under the lock: another run may have changed the output's settings while this one started.
            session.recheck(lambda: check_settings(output, run.settings()))
            return _phases(run, session, executor, log)
    finally:
        executor.close()


def finish_unchanged(run: PreparedRun, log: Callable[[str], None] = say) -> dict[str, Any] | None:
    """Under the output's lock: the output checked again (the last run's report and the settings, then
    :func:`~.checks.left_to_do`: every planned image committed whole, every caption stored, nothing
    damaged); with nothing left, only the report and ``run_config.json`` are written (the run, the card
    and the shards stay as they are). Returns the report, or None when something is left to do."""
    assert run.finished is not None
    output = run.output()
    store = EmbeddingStore(run.store_root, run.identity)
    with OutputSession(output, run.run_id, inputs=(run.scan.path,), log=log) as session:
        removed = session.prepare()
        images_per_prompt = run.config.generation.images_per_prompt
        try:
            if not records_this_run(output, run):
                return None  # another run changed the output while this one started
            left = left_to_do(output, run.scan, images_per_prompt, store, run.spec.uses_negative)
        except (UserError, OSError, ValueError) as exc:  # a file that does not read: the full path says what
            left = Left(first_line(exc))
        if left.reason is not None:
            log(f"{output.uri}: {left.reason}; running the pipeline")
            return None
        report = RunReport(
            prompts=run.scan.count,
            images_planned=left.planned,
            images_skipped=left.planned,
            embeddings_reused=left.captions,
            captions_empty=left.captions_empty,
            temporaries_removed=removed,
            executor=run.executor,
            buckets=left.buckets,
            output=output.uri,
            store=store.uri,
            plan_run=str(run.finished["plan_run"]),
            prompt_file=prompt_bytes(run.scan),
            nothing_to_do=True,
        )
        if run.label_names is not None:
            report.labels = {run.label_names[number]: count for number, count in left.labels.items()}
        report_left_alone(output, store, report, log)
        log(
            f"nothing to do: the {left.planned} planned images are committed and the {left.captions} "
            "captions stored, with this run's settings and prompt file; no executor or model started"
        )
        final = report.close(time.time() - run.started)
        write_reports(session, run, final)
    log(summary(final, output.uri))
    return final


def _phases(
    run: PreparedRun, session: OutputSession, executor: Executor, log: Callable[[str], None]
) -> dict[str, Any]:
    """The phases in order: prepare the output, clean, encode (not on a dry run), plan and generate
    (not with ``encode_only``), then the report."""
    output = session.output
    report = RunReport(
        prompts=run.scan.count,
        dry_run=run.dry_run,
        encode_only=run.encode_only and not run.dry_run,
        executor=executor.name,
        output=output.uri,
        prompt_file=prompt_bytes(run.scan),
    )
    store, chunks = _prepare_output(run, session, report, log)

    # -- clean
    start = time.perf_counter()
    cleaned = executor.clean(chunks, output.location.fs)
    report.captions_empty = cleaned.captions_empty
    report.stage_seconds["clean"] = time.perf_counter() - start
    log(f"cleaned {run.scan.count} prompts ({report.captions_empty} cleaned to empty text)")
    report.captions_lost = cleaned.captions_lost
    if cleaned.captions_lost:
        log(lost_line(cleaned.captions_lost, cleaned.lost_example or ""))

    if not run.dry_run:
        _encode(run, executor, cleaned, store, report, log)
    if not run.encode_only or run.dry_run:
        _plan_and_generate(run, session, executor, cleaned, store, report, log)

    # -- the report
    final = report.close(time.time() - run.started)
    write_reports(session, run, final)
    log(summary(final, output.uri))
    return final


def write_reports(session: OutputSession, run: PreparedRun, final: dict[str, Any]) -> None:
    """The run report and ``run_config.json``; a dry run's report beside them (they stay as they were)."""
    if run.dry_run:
        session.write_report(final, DRY_RUN_REPORT_FILE)
        return
    session.write_report(final)
    session.write_report(json.loads(config_json(run.config)), CONFIG_FILE)


def _prepare_output(
    run: PreparedRun, session: OutputSession, report: RunReport, log: Callable[[str], None]
) -> tuple[EmbeddingStore, list[str]]:
    """Own temporaries removed, the settings and the store pointer written, damaged files set aside, the
    prompts staged; returns the open store and the staged chunks."""
    output = session.output
    report.temporaries_removed = session.prepare()
    session.write_settings(run.settings())
    store = EmbeddingStore(run.store_root, run.identity).open()
    report.temporaries_removed += store.remove_temporaries()
    report.store = store.uri
    output.write_json(STORE_POINTER_FILE, {"uri": store_pointer(output, store)})
    set_aside_damaged(run.run_id, output, store, report, log)
    names = None if run.label_names is None else list(run.label_names)
    negative = run.config.generation.negative_prompt
    return store, stage_prompts(output, run.run_id, run.scan, negative, names)


def _encode(
    run: PreparedRun,
    executor: Executor,
    cleaned: Cleaned,
    store: EmbeddingStore,
    report: RunReport,
    log: Callable[[str], None],
) -> None:
    """The encode phase: the distinct captions the store lacks, through T5 into committed store parts."""
    start = time.perf_counter()
    captions = executor.to_encode(cleaned, store)
    report.embeddings_encoded, report.embeddings_reused = captions.count, captions.reused
    log(
        f"embedding store {store.uri}: {captions.count} captions to encode, {captions.reused} reused "
        f"({CAPTIONS_NOTE.format(prompts=run.scan.count)})"
    )
    rows_per_part = run.config.output.store_rows_per_part
    executor.encode(captions, StoreWriter(run.store_root, run.identity, rows_per_part=rows_per_part))
    report.stage_seconds["encode"] = time.perf_counter() - start


def _plan_and_generate(
    run: PreparedRun,
    session: OutputSession,
    executor: Executor,
    cleaned: Cleaned,
    store: EmbeddingStore,
    report: RunReport,
    log: Callable[[str], None],
) -> None:
    """The plan (committed, also on a dry run), then, unless a dry run, the images still to make and the
    card."""
    output = session.output
    start = time.perf_counter()
    images = executor.to_generate(cleaned, PlanWriter(output.uri, run.run_id), output.format, run.dry_run)
    output.commit_plan(run.run_id, images.planned, dry_run=run.dry_run)
    report.plan_run = "" if run.dry_run else run.run_id
    report.images_planned, report.images_skipped = images.planned, images.planned - images.count
    report.buckets = dict(sorted(images.buckets.items()))
    if run.label_names is not None:
        report.labels = {run.label_names[number]: count for number, count in sorted(images.labels.items())}
    report.stage_seconds["plan"] = time.perf_counter() - start
    log(
        f"{'dry run: ' if run.dry_run else ''}planned {images.planned} images in {len(images.buckets)} "
        f"buckets; {images.count} to generate, {report.images_skipped} already done"
    )
    if run.dry_run:
        return
    if images.rows is not None:
        start = time.perf_counter()
        session.committed()  # shards may be committed from here on: the settings stay
        made = executor.generate(images, store, image_writer(run, output), run.execution.limits)
        report.add_generated(made, time.perf_counter() - start)
    session.write_card(run.settings(), {"images_total": report.images_planned, "prompts": report.prompts})


def image_writer(run: PreparedRun, output: OutputDataset) -> ImageWriter:
    settings = run.config.output
    return ImageWriter(
        output.uri,
        run.run_id,
        run.spec.row_constants(),
        run.settings(),
        settings.rows_per_shard,
        settings.row_group_size,
        settings.format,
    )


def store_pointer(output: OutputDataset, store: EmbeddingStore) -> str:
    """The store's URI, relative when the store lives inside the output (a copied or moved output
    is self-contained)."""
    inside = output.location.uri.rstrip("/") + "/"
    return store.uri[len(inside) :] if store.uri.startswith(inside) else store.uri


def set_aside_damaged(
    run_id: str, output: OutputDataset, store: EmbeddingStore, report: RunReport, log: Callable[[str], None]
) -> None:
    """Move shards, store parts and failure files that cannot be read whole to ``quarantine/``;
    their images and embeddings are planned again like any missing ones."""
    shards, failures, parts = damaged_files(output, store)
    for shard in shards:  # a shard goes aside with its companions (a tar's key index)
        target = output.quarantine_shard(shard, run_id)
        report.quarantined.append({"file": shard.path, "reason": shard.reason, "moved_to": target})
        log(f"damaged file set aside: {shard.path} ({shard.reason}) -> {target}")
    inside = store.location.is_local == output.location.is_local and store.uri.startswith(
        output.uri.rstrip("/") + "/"
    )
    store_base = (
        output.location if inside else store.location
    )  # OUTPUT/quarantine/ for the output's own store
    for item, location in [(d, output.location) for d in failures] + [(d, store_base) for d in parts]:
        target = output.quarantine(item, run_id, location)
        report.quarantined.append({"file": item.path, "reason": item.reason, "moved_to": target})
        log(f"damaged file set aside: {item.path} ({item.reason}) -> {target}")
    report_left_alone(output, store, report, log)


def report_left_alone(
    output: OutputDataset,
    store: EmbeddingStore,
    report: RunReport,
    log: Callable[[str], None],
) -> None:
    """Another output or store nested where this one keeps its files: never read, moved or counted as ours."""
    for location, path in (
        (output.location, output.data_path()),
        (store.location, store.location.join("parts")),
    ):
        for root in nested_roots(location, path):
            report.left_alone.append(root)
            log(f"left alone: {root} holds another pixart-batch output or store; move it out of {path}")
