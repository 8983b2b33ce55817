"""The settings guard: a run may not change the images an output already holds.

The guard is ``settings.json``, or — when that is missing — the settings every shard records in its
metadata (:data:`~pixart_batch.schema.SHARD_SETTINGS_KEY`)."""

from __future__ import annotations

import json
from typing import Any

from .. import schema as S
from ..errors import OutputError, shorten
from ..prompts.fields import normal_label
from .formats import DEFAULT_FORMAT
from .layout import FORMAT_SETTING, SETTINGS_FILE, OutputDataset

EXPORT_SETTING = "export"
"""The setting an export's ``settings.json`` records (``{"source", "where", "per_label"}``)."""
SETTING_DEFAULTS = {FORMAT_SETTING: DEFAULT_FORMAT}
"""What a setting was before it existed: outputs made then stay usable (and guarded)."""


def shard_settings(output: OutputDataset) -> dict[str, Any] | None:
    """The settings the committed shards record in their metadata (None when there are no shards).

    Refuses shards that disagree, or that record none (written before shards carried them)."""
    import pyarrow.parquet as pq

    found: dict[str, Any] | None = None
    # The key files of the shards there are, whatever format this run asks for: a run in another
    # format is refused by the settings they record.
    for path in output.format_on_disk().key_files():
        try:
            with output.location.fs.open_input_file(path) as handle:
                metadata = pq.ParquetFile(handle).schema_arrow.metadata or {}
        except Exception:
            continue  # a damaged shard: quarantined by the run
        if S.SHARD_SETTINGS_KEY not in metadata:
            raise OutputError(
                f"{output.location.join(SETTINGS_FILE)}: missing, and {path} does not record its settings; "
                "restore settings.json or write to a new output"
            )
        settings = json.loads(metadata[S.SHARD_SETTINGS_KEY])
        if found is not None and settings != found:
            if changed_setting(found, settings) is None:  # grown since (more images, more classes)
                found = settings
            elif changed_setting(settings, found) is not None:
                raise OutputError(
                    f"{path}: records other settings than the output's other shards; "
                    "this output mixes settings"
                )
            continue
        found = settings
    return found


def check_settings(output: OutputDataset, settings: dict[str, Any]) -> str | None:
    """Refuse a run whose settings would change images already in ``output`` (one line naming the setting).

    The guard protects images: while the output holds no shard, a run with other settings takes it over;
    returns the line that says so (None when nothing changes hands)."""
    recorded = output.read_settings()
    if recorded is None:
        recorded = shard_settings(output)
    if recorded is None:
        return None
    change = changed_setting(recorded, settings)
    if change is None:
        return None
    name, before, now = change
    if not output.format_on_disk().shard_files():
        return (
            f"{output.uri} holds no images yet: this run's settings replace its earlier ones "
            f"(setting '{name}' was {_shown(before)}, now {_shown(now)})"
        )
    if isinstance(recorded.get(EXPORT_SETTING), dict) and EXPORT_SETTING not in settings:
        raise OutputError(_export_refusal(output, recorded[EXPORT_SETTING]))
    hint = (
        f" (to score the images it holds: pixart-batch score {output.uri})"
        if name == S.SCORE_SETTING and before is None
        else ""
    )
    raise OutputError(
        f"{output.uri}: setting '{name}' is {_shown(now)} but this output was generated with "
        f"{_shown(before)}; "
        f"re-run with the same setting, or write to a new output{hint}"
    )


def _export_refusal(output: OutputDataset, export: dict[str, Any]) -> str:
    """Why a run may not write into an export (``pixart-batch export``'s output), in one line."""
    source, where, per_label = export.get("source"), export.get("where"), export.get("per_label")
    selection = f"where {shorten(str(where), 120)!r}" if where else "all rows"
    selection += f", at most {per_label} per label" if per_label else ""
    into = f"{source} (its source)" if source else "its source"
    return (
        f"{output.uri}: is an export of {source or 'another output'} ({selection}); "
        f"exports are not generated into: generate into {into} or a new output"
    )


def _shown(value: Any) -> str:
    """A setting's value for a message (a long list of class names cut short)."""
    return shorten(json.dumps(value), 200)


def changed_setting(recorded: dict[str, Any], settings: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first setting (by name) that would change the images ``recorded`` made: ``(name, before, now)``."""
    from ..spec import GROWABLE_SETTINGS, default_of, leaf_fields

    for name in sorted(set(recorded) | set(settings)):
        before, now = recorded.get(name, SETTING_DEFAULTS.get(name)), settings.get(name)
        if before == now:
            continue
        if name in GROWABLE_SETTINGS and isinstance(before, int) and isinstance(now, int) and now > before:
            continue
        if (
            name in GROWABLE_SETTINGS
            and isinstance(before, list)
            and isinstance(now, list)
            and now[: len(before)] == before
        ):
            continue  # names appended (a labelled output's classes): the earlier ones keep their ids
        if name not in recorded and name in leaf_fields() and now == default_of(name):
            continue  # a setting added after this output was made, at its default: the images it made
        return name, before, now
    return None


def label_names(output: OutputDataset, labels: tuple[str, ...]) -> list[str] | None:
    """A labelled run's class names: the output's recorded ones in their order, then this run's new
    labels (sorted among themselves), so no earlier class is renumbered; ``None`` for an unlabelled run."""
    if not labels:
        return None
    recorded = output.read_settings()
    if recorded is None:
        recorded = shard_settings(output)
    before = S.label_names(recorded) or []
    known = class_ids(before)
    return before + sorted(label for label in labels if normal_label(label) not in known)


def class_ids(names: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Class name (Unicode NFC) → class id, by the output's class names. Names are compared in NFC, as
    labels are read, so an output that recorded "café" in NFD keeps its class; where two recorded
    names are one in NFC (an output made before labels were normalised), the first one is meant."""
    ids: dict[str, int] = {}
    for number, name in enumerate(names):
        ids.setdefault(normal_label(name), number)
    return ids
