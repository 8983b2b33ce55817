"""``pixart-batch score OUTPUT``: quality scores added to an existing output, after the fact.

For each shard without ``clip_score``: its rows are read row group by row group (image bytes and
caption), scored by the same :class:`~pixart_batch.stages.score.Scorer` a generate run uses (on the
stored image, decoded from its bytes), and written as a new version of the shard under the same name
with the score column(s) added, committed atomically (a killed run leaves each shard old or new;
re-running skips the scored ones). No other column changes: the image bytes are copied as they are.
Each format rewrites its own shards (:meth:`~pixart_batch.output.formats.OutputFormat.rewrite`): Parquet
shards keep their row groups; a WebDataset tar is rewritten with each ``KEY.json`` carrying the scores
(its image and ``KEY.txt`` members unchanged) and its key index recommitted. A row whose image does not
decode gets null scores.
Everything is checked before anything is written (the score model's files as ``transformers`` will
load them, the scoring identity, damaged shards), and again under the output's lock, in an
:class:`~pixart_batch.output.session.OutputSession`. The scoring model's identity goes into
``settings.json`` first (under ``score``: the settings guard then refuses a generate run without the
same scoring; put back if the command fails before a shard is rewritten) and into each new shard's
metadata; the card is rewritten at the end.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import schema as S
from .errors import OutputError, first_line, one_line
from .output.layout import REPORT_FILE, SETTINGS_FILE, OutputDataset, open_output
from .output.session import OutputSession, new_run_id
from .progress import say
from .score_model import SCORE_SETTING, resolve_score_model
from .spec import ScoreSpec

if TYPE_CHECKING:
    import pyarrow as pa

    from .stages.score import Scorer


@dataclass
class ScoreResult:
    shards_scored: int = 0
    shards_skipped: int = 0
    rows: int = 0
    scored: list[str] = field(default_factory=list)
    undecodable: int = 0
    """Rows whose image bytes did not decode: their scores are null."""
    first_undecodable: tuple[str, str] | None = None


def score_output(
    uri: str,
    model: str,
    revision: str | None = None,
    aesthetic_head: str | None = None,
    batch_size: int = 32,
    dtype: str = "float32",
    device: str = "cpu",
    log: Callable[[str], None] = say,
) -> ScoreResult:
    """Score every shard of ``uri`` that has no scores yet; returns what was done.

    Checked before anything is written: the output, the score model (the files ``transformers`` will
    load), the scoring identity against the output's, and its shards (a damaged one is refused); then
    again under the lock (another ``score`` or ``generate`` may have changed them meanwhile)."""
    output = open_output(uri)
    output = OutputDataset(output.uri, output.format_on_disk().name)
    _recorded(output)
    scoring = resolve_score_model(model, revision, aesthetic_head, dtype)
    identity = scoring.identity()
    _check_output(output, identity)
    with OutputSession(output, new_run_id("score"), log=log) as session:
        settings = {**_check_output(output, identity), SCORE_SETTING: identity}
        session.prepare()  # what a killed score run left
        result = ScoreResult()
        wanted = S.score_columns(settings)
        todo = []
        for path in output.format.shard_files():
            if set(wanted) <= set(_column_names(output, path)):
                result.shards_skipped += 1
            else:
                todo.append(path)
        session.write_settings(settings)  # first: from now on a run without this scoring is refused
        scorer: Scorer | None = None
        schema = S.shard_schema(settings)
        for path in todo:
            if scorer is None:
                from .stages.score import Scorer

                head = str(scoring.head) if scoring.head is not None else None
                scorer = Scorer(
                    ScoreSpec(scoring.source, head, dtype, device, batch_size, revision=scoring.revision)
                )
            result.rows += output.format.rewrite(path, settings, _ScoreRows(scorer, schema, result), schema)
            session.committed()
            result.shards_scored += 1
            result.scored.append(path)
            logging.getLogger("pixart_batch").info(f"scored {path}")
        session.write_card(settings, _counts(output))
    if result.undecodable and result.first_undecodable is not None:
        key, error = result.first_undecodable
        log(
            f"{result.undecodable} images could not be decoded, their scores are null "
            f"(first: {key}: {error}); run pixart-batch verify {output.uri}"
        )
    log(
        f"scored {result.rows} images in {result.shards_scored} shards "
        f"({result.shards_skipped} already scored) -> {output.uri}"
    )
    return result


def _recorded(output: OutputDataset) -> dict[str, Any]:
    recorded = output.read_settings()
    if recorded is None:
        raise OutputError(
            f"{output.location.join(SETTINGS_FILE)}: missing; score an output made by pixart-batch generate"
        )
    return recorded


def _check_output(output: OutputDataset, identity: dict[str, Any]) -> dict[str, Any]:
    """The output's settings, after refusing an output scored with another model or holding a damaged
    shard (one line; nothing written). Returns the settings."""
    recorded = _recorded(output)
    before = recorded.get(SCORE_SETTING)
    if before is not None and before != identity:
        raise OutputError(
            f"{output.uri}: already scored with {json.dumps(before, sort_keys=True)}, "
            f"not {json.dumps(identity, sort_keys=True)}; "
            "score with the same model and head, or export to a new output first"
        )
    output.refuse_damaged_shards(
        "re-run pixart-batch generate with the same command to set it aside and redo its images, "
        "then score; nothing was written"
    )
    return recorded


class _ScoreRows:
    """The rows of one shard with their scores (the transform of a shard rewrite)."""

    def __init__(self, scorer: Scorer, schema: pa.Schema, result: ScoreResult) -> None:
        self.scorer, self.schema, self.result = scorer, schema, result

    def __call__(self, table: pa.Table) -> pa.Table:
        return scored_table(table, self.scorer, self.schema, self.result)


def _column_names(output: OutputDataset, path: str) -> list[str]:
    """The columns of a shard (one line for a shard damaged since the check)."""
    try:
        return output.format.columns(path)
    except Exception as exc:
        raise OutputError(
            f"{path}: damaged shard ({one_line(str(exc))}); "
            "re-run pixart-batch generate to set it aside, then score"
        ) from None


def scored_table(
    table: pa.Table, scorer: Scorer, schema: pa.Schema, result: ScoreResult | None = None
) -> pa.Table:
    """``table`` with ``clip_score`` (and ``aesthetic_score``) computed from its stored images and captions.

    A row whose image bytes do not decode gets null scores (counted in ``result``), never a crash."""
    import pyarrow as pa

    images, keys, captions = [], table.column(S.KEY).to_pylist(), table.column(S.CAPTION).to_pylist()
    for key, item in zip(keys, table.column(S.IMAGE).to_pylist(), strict=True):
        image, error = _decoded(item)
        images.append(image)
        if error is not None and result is not None:
            result.undecodable += 1
            result.first_undecodable = result.first_undecodable or (str(key), error)
    good = [index for index, image in enumerate(images) if image is not None]
    scores: list[tuple[float | None, float | None]] = [(None, None)] * len(images)
    if good:
        found = scorer.score([images[i] for i in good], [str(captions[i]) for i in good])
        for index, score in zip(good, found, strict=True):
            scores[index] = (score[0], score[1])
    added = {S.CLIP_SCORE: [s[0] for s in scores], S.AESTHETIC_SCORE: [s[1] for s in scores]}
    columns = [
        table.column(name)
        if name in table.column_names
        else pa.array(added[name], pa.float32())
        if name in added
        else pa.nulls(table.num_rows, schema.field(name).type)  # a column added after this shard was made
        for name in schema.names
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _decoded(item: dict[str, Any] | None) -> tuple[Any, str | None]:
    """The stored image as RGB, or ``(None, why)`` when its bytes are missing or do not decode."""
    from PIL import Image

    try:
        data = (item or {}).get("bytes")
        if not data:
            return None, "no image bytes"
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB"), None
    except Exception as exc:  # PIL raises many types for bad bytes
        return None, first_line(exc, with_type=True)


def _counts(output: OutputDataset) -> dict[str, Any]:
    report = output.read_object(REPORT_FILE, {}, "run report") or {}
    counts = {"prompts": report.get("prompts", 0)}
    if isinstance(report.get("images_planned"), int):
        counts["images_total"] = report["images_planned"]
    return counts
