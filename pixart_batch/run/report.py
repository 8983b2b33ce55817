"""The run report (``run_report.json``), the run's summary line and its line about the prompts that
caption cleaning stripped of most of their text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import shorten

if TYPE_CHECKING:
    from ..output.writers import ImageWriteResult


@dataclass
class RunReport:
    prompts: int = 0
    images_planned: int = 0
    images_generated: int = 0
    images_failed: int = 0
    images_skipped: int = 0
    embeddings_encoded: int = 0
    embeddings_reused: int = 0
    images_with_truncated_caption: int = 0
    captions_empty: int = 0
    captions_lost: int = 0
    """Prompts whose caption lost most of its letters and digits in cleaning (CJK and other scripts)."""
    temporaries_removed: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    """Folders inside the output's shards or store parts that hold another output or store: not touched."""
    dry_run: bool = False
    encode_only: bool = False
    """``pixart-batch encode``: the embedding store only (no plan, no images)."""
    executor: str = ""
    buckets: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    """A labelled run's planned images per class name (empty for an unlabelled run)."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_busy_seconds: dict[str, float] = field(default_factory=dict)
    store_bytes_read: int = 0
    """Bytes read from the embedding store by the generate phase (Parquet column chunks and footers)."""
    store_bytes_used: int = 0
    """Embedding bytes those reads were for (each batch's distinct captions and negative prompts)."""
    store_bytes_read_per_image: float = 0.0
    images_per_second: float = 0.0
    """Images per second of the generate phase (model loading included)."""
    images_per_second_overall: float = 0.0
    """Images per second of the whole run, from the driver's start to the report."""
    wall_seconds: float = 0.0
    output: str = ""
    store: str = ""
    plan_run: str = ""
    """The run whose plan is the output's latest (``plan/<plan_run>/``; empty when none was made)."""
    prompt_file: dict[str, Any] = field(default_factory=dict)
    """Which prompt bytes the plan was made from: ``sha256`` and ``bytes`` of the scan's fingerprint."""
    nothing_to_do: bool = False
    """The run found every planned image committed and every caption in the store before starting
    anything (no executor, no model): it wrote only this report and ``run_config.json``."""

    def add_generated(self, made: ImageWriteResult, elapsed: float) -> None:
        """The generate phase's result (every write task's, summed) and how long it took."""
        self.store_bytes_read += made.store_bytes_read
        self.store_bytes_used += made.store_bytes_used
        self.images_generated += made.rows
        self.images_with_truncated_caption += made.truncated
        self.images_failed += made.failed
        self.stage_seconds["generate"] = elapsed
        self.stage_busy_seconds = {k: round(v, 3) for k, v in made.busy_s.items()}
        self.images_per_second = self.images_generated / elapsed if elapsed > 0 else 0.0

    def close(self, wall_seconds: float) -> dict[str, Any]:
        """The final figures (rates, rounding) as the JSON written to ``run_report.json``."""
        self.wall_seconds = round(wall_seconds, 3)
        made = self.images_generated
        self.store_bytes_read_per_image = round(self.store_bytes_read / made, 1) if made else 0.0
        self.images_per_second_overall = made / self.wall_seconds if self.wall_seconds > 0 else 0.0
        self.stage_seconds = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        return asdict(self)


def summary(report: dict[str, Any], plan_uri: str) -> str:
    """The run's last console line."""
    if report["dry_run"]:
        return (
            f"dry run done: {report['images_planned']} images planned in {len(report['buckets'])} buckets, "
            f"{report['images_skipped']} already made; nothing generated (plan in {plan_uri}/plan/)"
        )
    captions = (
        f"{report['embeddings_encoded']} captions encoded, {report['embeddings_reused']} reused "
        f"({CAPTIONS_NOTE.format(prompts=report['prompts'])})"
    )
    if report.get("encode_only"):
        return f"encode done in {report['wall_seconds']:.1f} s: {captions} -> {report['store']}"
    failed = f", {report['images_failed']} failed" if report["images_failed"] else ""
    made = report["images_generated"] or report["images_failed"]
    idle = f"nothing to generate{' (nothing started)' if report.get('nothing_to_do') else ''}, "
    rate = f"{report['images_per_second']:.2f} images/s while generating, " if made else idle
    return (
        f"done in {report['wall_seconds']:.1f} s: {report['images_generated']} images generated{failed}, "
        f"{report['images_skipped']} skipped, {captions}; {rate}"
        f"{report['images_per_second_overall']:.2f} images/s overall ({report['executor']} executor) "
        f"-> {report['output']}"
    )


CAPTIONS_NOTE = "the distinct captions of {prompts} prompts and the negative prompt"
"""What the captions counted are (so 23 captions for 22 prompts is explained)."""


def lost_line(count: int, example: str) -> str:
    """The one line about prompts whose caption lost most of its text in cleaning."""
    return (
        f"{count} prompts lost most of their text in caption cleaning (diffusers' PixArt cleaning drops "
        f"CJK and other non-Latin scripts, URLs and HTML), e.g. {shorten(example, 60)!r}; their captions "
        "are what T5 encodes: translate them, or set model.clean_caption: false to encode them lowercased "
        "and stripped"
    )
