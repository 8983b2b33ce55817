"""The run as an application: an immutable plan of the run (everything checked, nothing written),
then :func:`execute` carries it out with an executor, phase by phase, each phase's result passed on
as a value.

Order: :func:`plan_run` validates the prompt file (a streaming pass), the checkpoint and its classes
(→ ``RunSpec``), sizes and steps, that the output is ours, its metadata and the settings guard, and
what the executor can do here → :func:`execute` starts the executor (Ray) and checks its resources →
opens the output session (:class:`~pixart_batch.output.session.OutputSession`: the lock, the marker, the
guard re-checked, the output checked writable) → cleans its own temporaries,
writes ``settings.json`` and the store pointer, sets damaged files aside, stages the prompt chunks →
clean → encode (distinct captions minus the store) → plan (images minus committed keys, sorted by
bucket) → generate → the card → the report → releases the lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import schema as S
from ..config import RunConfig, config_json
from ..executors import choose_executor, make_executor
from ..executors.base import Executor, FailureLimits
from ..fast import check_fast_modes
from ..output import OutputDataset
from ..output.guard import check_settings, label_names
from ..output.layout import CONFIG_FILE, DRY_RUN_REPORT_FILE, STORE_DIR, STORE_POINTER_FILE
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
from .checks import card_settings_warning, check_quantization, check_sizes
from .report import CAPTIONS_NOTE, RunReport, summary

if TYPE_CHECKING:
    from ..prompts import PromptScan


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, checked; nothing written yet."""

    config: RunConfig
    spec: RunSpec
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

    def output(self) -> OutputDataset:
        return OutputDataset(self.output_uri, self.config.output.format)

    def settings(self) -> dict[str, Any]:
        """What determines the images (:meth:`RunSpec.settings`), and a labelled run's class names."""
        return with_labels(self.spec.settings(), self.label_names)


def with_labels(settings: dict[str, Any], names: tuple[str, ...] | list[str] | None) -> dict[str, Any]:
    return settings if names is None else {**settings, S.LABEL_NAMES_SETTING: list(names)}


def plan_run(config: RunConfig, prompts: str, output: str, encode_only: bool = False, dry_run: bool = False) -> RunPlan:
    """Check everything that can be checked without writing; returns the plan of the run."""
    started = time.time()
    scan = scan_prompts(prompts)
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
    executor = choose_executor(config, scan.count * config.generation.images_per_prompt)
    make_executor(executor, config, spec).check()
    return RunPlan(
        config=config,
        spec=spec,
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


def checkpoint_folders(spec: RunSpec) -> list[str]:
    """The local folders the run reads its model from (the checkpoint's, and any ``model.components_from``)."""
    model = spec.model
    return sorted({str(model.local_dir)} | ({str(model.base.local_dir)} if model.base is not None else set()))


def run_generate(
    config: RunConfig, prompts: str, output: str, encode_only: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """The whole pipeline (or only the embedding store with ``encode_only``, or only the plan with
    ``dry_run``); returns the run report."""
    return execute(plan_run(config, prompts, output, encode_only=encode_only, dry_run=dry_run))


def execute(plan: RunPlan, log: Callable[[str], None] = say) -> dict[str, Any]:
    """Carry out ``plan`` in an output session; returns the run report (also in ``run_report.json``)."""
    output = plan.output()
    warning = None if plan.encode_only else card_settings_warning(plan.spec)
    if warning:
        log(warning)
    executor = make_executor(plan.executor, plan.config, plan.spec)
    # Ray started and its resources checked before the output is touched: a refusal leaves nothing behind.
    executor.start()
    executor.check_resources()
    with OutputSession(output, plan.run_id, inputs=(plan.scan.path,), log=log) as session:
        # Under the lock: another run may have changed the output's settings while this one started.
        session.recheck(lambda: check_settings(output, plan.settings()))
        return _phases(plan, session, executor, log)


def _phases(plan: RunPlan, session: OutputSession, executor: Executor, log: Callable[[str], None]) -> dict[str, Any]:
    config, output = plan.config, session.output
    report = RunReport(
        prompts=plan.scan.count,
        dry_run=plan.dry_run,
        encode_only=plan.encode_only and not plan.dry_run,
        executor=executor.name,
        output=output.uri,
    )

    # -- prepare the output
    report.temporaries_removed = session.prepare()
    session.write_settings(plan.settings())
    store = EmbeddingStore(plan.store_root, plan.identity).open()
    report.temporaries_removed += store.remove_temporaries()
    report.store = store.uri
    output.write_json(STORE_POINTER_FILE, {"uri": store_pointer(output, store)})
    set_aside_damaged(plan.run_id, output, store, report, log)
    names = None if plan.label_names is None else list(plan.label_names)
    chunks = stage_prompts(output, plan.run_id, plan.scan, config.generation.negative_prompt, names)

    # -- clean
    start = time.perf_counter()
    cleaned = executor.clean(chunks, output.location.fs)
    report.captions_empty = cleaned.captions_empty
    report.stage_seconds["clean"] = time.perf_counter() - start
    log(f"cleaned {plan.scan.count} prompts ({report.captions_empty} cleaned to empty text)")

    # -- encode (not on a dry run)
    if not plan.dry_run:
        start = time.perf_counter()
        todo = executor.to_encode(cleaned, store)
        report.embeddings_encoded, report.embeddings_reused = todo.count, todo.reused
        log(
            f"embedding store {store.uri}: {todo.count} captions to encode, {todo.reused} reused "
            f"({CAPTIONS_NOTE.format(prompts=plan.scan.count)})"
        )
        executor.encode(todo, StoreWriter(plan.store_root, plan.identity, rows_per_part=config.output.store_rows_per_part))
        report.stage_seconds["encode"] = time.perf_counter() - start

    # -- plan and generate
    if not plan.encode_only or plan.dry_run:
        start = time.perf_counter()
        planned = executor.plan(cleaned, PlanWriter(output.uri, plan.run_id), output.format, plan.dry_run)
        output.commit_plan(plan.run_id, planned.planned, dry_run=plan.dry_run)
        report.images_planned, report.images_skipped = planned.planned, planned.planned - planned.todo
        report.buckets = dict(sorted(planned.buckets.items()))
        if plan.label_names is not None:
            report.labels = {plan.label_names[number]: count for number, count in sorted(planned.labels.items())}
        report.stage_seconds["plan"] = time.perf_counter() - start
        log(
            f"{'dry run: ' if plan.dry_run else ''}planned {planned.planned} images in {len(planned.buckets)} buckets; "
            f"{planned.todo} to generate, {report.images_skipped} already done"
        )
        if not plan.dry_run:
            if planned.remaining is not None:
                start = time.perf_counter()
                session.committed()  # shards may be committed from here on: the settings stay
                made = executor.generate(planned, store, image_writer(plan, output), _limits(config))
                report.add_generated(made, time.perf_counter() - start)
            session.write_card(plan.settings(), {"images_total": report.images_planned, "prompts": report.prompts})

    # -- the report
    final = report.close(time.time() - plan.started)
    if plan.dry_run:  # beside the real run's report and config, which stay as they were
        session.write_report(final, DRY_RUN_REPORT_FILE)
    else:
        session.write_report(final)
        session.write_report(json.loads(config_json(config)), CONFIG_FILE)
    log(summary(final, output.uri))
    return final


def _limits(config: RunConfig) -> FailureLimits:
    failures = config.failures
    return FailureLimits(failures.max_consecutive, failures.max_rate, failures.rate_after)


def image_writer(plan: RunPlan, output: OutputDataset) -> ImageWriter:
    settings = plan.config.output
    return ImageWriter(
        output.uri,
        plan.run_id,
        plan.spec.row_constants(),
        plan.settings(),
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
    for shard in output.format.find_damaged():  # a shard goes aside with its companions (a tar's key index)
        target = output.quarantine_shard(shard, run_id)
        report.quarantined.append({"file": shard.path, "reason": shard.reason, "moved_to": target})
        log(f"damaged file set aside: {shard.path} ({shard.reason}) -> {target}")
    damaged = [(d, output.location) for d in output.find_damaged(output.failure_files(), S.KEY)]
    inside = store.location.is_local == output.location.is_local and store.uri.startswith(output.uri.rstrip("/") + "/")
    store_base = output.location if inside else store.location  # OUTPUT/quarantine/ for the output's own store
    damaged += [(d, store_base) for d in output.find_damaged(store.part_files(), S.CAPTION_KEY, store.location)]
    for item, location in damaged:
        target = output.quarantine(item, run_id, location)
        report.quarantined.append({"file": item.path, "reason": item.reason, "moved_to": target})
        log(f"damaged file set aside: {item.path} ({item.reason}) -> {target}")
    # Another output or store nested where this one keeps its files: never read, moved or counted as ours.
    for location, path in ((output.location, output.data_path()), (store.location, store.location.join("parts"))):
        for root in nested_roots(location, path):
            report.left_alone.append(root)
            log(f"left alone: {root} holds another pixart-batch output or store; move it out of {path}")
