"""``pixart-batch score OUTPUT``: quality scores added to an existing output, after the fact.

For each shard without ``clip_score``: its rows are read row group by row group (image bytes and
caption), scored by the same :class:`~pixart_batch.stages.score.Scorer` a generate run uses (on the
stored image, decoded from its bytes), and written as a new version of the shard under the same name
with the score column(s) added, committed atomically (a killed run leaves each shard old or new;
re-running skips the scored ones). No other column changes: the image bytes are copied as they are.
Parquet shards keep their row groups; a WebDataset tar is rewritten with each ``KEY.json`` carrying
the scores (its image and ``KEY.txt`` members unchanged) and its key index recommitted.
The scoring model's identity goes into ``settings.json`` first (under ``score``: the settings guard
then refuses a generate run without the same scoring) and into each new shard's metadata; the card
is rewritten at the end. The output's lock is held throughout.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import schema as S
from .errors import OutputError
from .output.card import write_card
from .output.layout import REPORT_FILE, SETTINGS_FILE, OutputDataset, open_output
from .ownership import OutputLock
from .progress import say
from .score_model import SCORE_SETTING, resolve_score_model
from .spec import ScoreSpec
from .storage import ParquetStreamWriter, remove_temporaries

if TYPE_CHECKING:
    import pyarrow as pa

    from .stages.score import Scorer


@dataclass
class ScoreResult:
    shards_scored: int = 0
    shards_skipped: int = 0
    rows: int = 0
    scored: list[str] = field(default_factory=list)


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
    """Score every shard of ``uri`` that has no scores yet; returns what was done."""
    output = open_output(uri)
    output = OutputDataset(output.uri, output.format_on_disk().name)
    recorded = output.read_settings()
    if recorded is None:
        raise OutputError(f"{output.location.join(SETTINGS_FILE)}: missing; score an output made by pixart-batch generate")
    scoring = resolve_score_model(model, revision, aesthetic_head, dtype)
    identity = scoring.identity()
    before = recorded.get(SCORE_SETTING)
    if before is not None and before != identity:
        raise OutputError(
            f"{output.uri}: already scored with {json.dumps(before, sort_keys=True)}, "
            f"not {json.dumps(identity, sort_keys=True)}; "
            "score with the same model and head, or export to a new output first"
        )
    lock = OutputLock(output.location, time.strftime("score-%Y%m%dT%H%M%S", time.gmtime()) + uuid.uuid4().hex[:6])
    lock.acquire()
    try:
        remove_temporaries(output.location, output.data_path())  # what a killed score run left
        settings = {**recorded, SCORE_SETTING: identity}
        output.write_json(SETTINGS_FILE, settings)  # first: from now on a run without this scoring is refused
        result = ScoreResult()
        scorer: Scorer | None = None
        wanted = S.score_columns(settings)
        parquet = output.format.name == "parquet"
        for path in output.format.key_files() if not parquet else output.shard_files():
            path = path if parquet else path[: -len(".keys.parquet")] + output.format.suffix
            if set(wanted) <= set(_column_names(output, path)):
                result.shards_skipped += 1
                continue
            if scorer is None:
                from .stages.score import Scorer

                head = str(scoring.head) if scoring.head is not None else None
                scorer = Scorer(ScoreSpec(scoring.source, head, dtype, device, batch_size, revision=scoring.revision))
            result.rows += (rewrite_shard if parquet else rewrite_tar)(output, path, scorer, settings)
            result.shards_scored += 1
            result.scored.append(path)
            logging.getLogger("pixart_batch").info(f"scored {path}")
        write_card(output, settings, _counts(output))
        log(
            f"scored {result.rows} images in {result.shards_scored} shards "
            f"({result.shards_skipped} already scored) -> {output.uri}"
        )
        return result
    finally:
        lock.release()


def _column_names(output: OutputDataset, path: str) -> list[str]:
    """The columns of a shard (a tar's: its first sample's)."""
    import pyarrow.parquet as pq

    try:
        if output.format.name != "parquet":
            return list(next(iter(output.format.read_rows(path)), {}))
        with output.location.fs.open_input_file(path) as handle:
            return list(pq.ParquetFile(handle).schema_arrow.names)
    except Exception as exc:
        raise OutputError(f"{path}: damaged shard ({exc}); run pixart-batch generate to set it aside, then score") from None


def rewrite_shard(output: OutputDataset, path: str, scorer: Scorer, settings: dict[str, Any]) -> int:
    """``path`` again, under the same name, with the score columns; row group by row group. Returns its rows."""
    import pyarrow.parquet as pq

    schema = S.shard_schema(settings)
    rows = 0
    with output.location.fs.open_input_file(path) as handle:
        source = pq.ParquetFile(handle)
        with ParquetStreamWriter(output.location, path, schema, compression="zstd") as writer:
            for index in range(source.metadata.num_row_groups):
                table = source.read_row_group(index)
                writer.write(scored_table(table, scorer, schema), row_group_size=max(table.num_rows, 1))
                rows += table.num_rows
            writer.commit()
    return rows


def rewrite_tar(output: OutputDataset, path: str, scorer: Scorer, settings: dict[str, Any], chunk: int = 64) -> int:
    """A WebDataset tar again, under the same name, each ``KEY.json`` with the score columns; the image
    and ``KEY.txt`` members as they were. Through the format's own shard writer: the key index (same
    keys, the new settings) is committed first, then the tar (a kill between leaves the old tar, which
    the next run scores). Returns its rows."""
    import pyarrow as pa

    schema = S.shard_schema(settings)
    name = path[len(output.data_path()) :].lstrip("/")
    writer = output.format.open_shard(name, settings, chunk)
    rows, pending = 0, []
    try:
        for row in output.format.read_rows(path):
            pending.append(row)
            if len(pending) == chunk:
                writer.write(scored_table(pa.Table.from_pylist(pending, schema=_without_scores(schema)), scorer, schema))
                rows, pending = rows + len(pending), []
        if pending:
            writer.write(scored_table(pa.Table.from_pylist(pending, schema=_without_scores(schema)), scorer, schema))
            rows += len(pending)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return rows


def _without_scores(schema: pa.Schema) -> pa.Schema:
    for name in (S.CLIP_SCORE, S.AESTHETIC_SCORE):
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
    return schema


def scored_table(table: pa.Table, scorer: Scorer, schema: pa.Schema) -> pa.Table:
    """``table`` with ``clip_score`` (and ``aesthetic_score``) computed from its stored images and captions."""
    import pyarrow as pa
    from PIL import Image

    images = [Image.open(io.BytesIO(item["bytes"])).convert("RGB") for item in table.column(S.IMAGE).to_pylist()]
    scores = scorer.score(images, [str(c) for c in table.column(S.CAPTION).to_pylist()])
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


def _counts(output: OutputDataset) -> dict[str, Any]:
    report = output.read_object(REPORT_FILE, {}, "run report") or {}
    counts = {"prompts": report.get("prompts", 0)}
    if isinstance(report.get("images_planned"), int):
        counts["images_total"] = report["images_planned"]
    return counts
