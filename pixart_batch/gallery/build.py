"""``build_gallery``: pass 1 (:mod:`.sample`), pass 2 (the shown rows' columns and images, from
their row groups only), the thumbnails, the plots (:mod:`.plots`) and the pages (:mod:`.pages`),
each file committed atomically: thumbnails and plots first, then the card pages, ``index.html`` last;
files of an earlier gallery that this one no longer uses are removed at the end."""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import schema as S
from ..errors import OutputError, UserError, first_line
from ..output import OutputDataset, open_output
from ..output.layout import GALLERY_DIR
from ..storage import Location, is_symlink, list_files, remove_temporaries, write_bytes_atomic
from .html import View, bucket_page_name, label_page_name
from .pages import PLOTS_DIR, CardPage, Overview, card_page, index_page
from .sample import SCORE_COLUMNS, Card, Sampler, Scan, hand_out

if TYPE_CHECKING:
    from ..expr import Where

THUMBS_DIR = "thumbs"
DEFAULT_PER_BUCKET = 48
DEFAULT_MAX_IMAGES = 2000
DEFAULT_THUMB_SIZE = 256
FORMATS = {
    "webp": ("webp", "WEBP", {"quality": 80, "method": 4}),
    "jpeg": ("jpg", "JPEG", {"quality": 85, "optimize": True}),
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_OURS = re.compile(
    r"^(bucket-\d+x\d+\.html|label-\d+\.html|(all|kept|dropped)\.html|thumbs/[A-Za-z0-9_-]+\.(webp|jpg)"
    r"|plots/[A-Za-z0-9_-]+\.svg)$"
)
"""Every name a gallery writes but ``index.html`` (which is always rewritten)."""
Names = list[str] | None
Rows = Iterator[tuple[Card, dict[str, Any]]]
_CARD_COLUMNS = [S.KEY, S.PROMPT, S.CAPTION, S.SEED, S.WIDTH, S.HEIGHT, S.IMAGE]


@dataclass
class GalleryResult:
    path: str
    """Where ``index.html`` is."""
    images: int
    """Images in the output (readable shards)."""
    shown: int
    buckets: int
    skipped_shards: list[str] = field(default_factory=list)
    undecodable: int = 0
    labels: int = 0
    kept: int | None = None
    """Images ``--where`` keeps (None: no ``--where``)."""
    plots: int = 0


def thumb_name(key: str, extension: str) -> str:
    """``thumbs/<key>.<ext>``; a key that is not a plain file name (never one of ours) is hashed."""
    stem = key if _SAFE_NAME.match(key) else "k" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{THUMBS_DIR}/{stem}.{extension}"


def check_options(per_bucket: int, max_images: int, thumb_size: int, image_format: str) -> None:
    if per_bucket < 1:
        raise UserError(f"--per-bucket {per_bucket}: must be at least 1")
    if max_images < 1:
        raise UserError(f"--max-images {max_images}: must be at least 1")
    if not 16 <= thumb_size <= 2048:
        raise UserError(f"--thumb-size {thumb_size}: must be between 16 and 2048 pixels")
    if image_format not in FORMATS:
        raise UserError(f"--format {image_format}: must be one of {', '.join(FORMATS)}")
    from PIL import features

    if not features.check("webp" if image_format == "webp" else "jpg"):
        cannot = f"this Pillow cannot write {image_format}"
        raise UserError(f"--format {image_format}: {cannot}; use --format jpeg")


def thumbnail(data: bytes, size: int, image_format: str) -> bytes:
    from PIL import Image

    _, pil_format, options = FORMATS[image_format]
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, pil_format, **options)
    return out.getvalue()


def _columns(output: OutputDataset, shards: list[str]) -> list[str]:
    """The columns of the first shard that can be read (none when no shard can)."""
    for path in shards[:8]:
        try:
            return output.format.columns(path)
        except Exception:
            continue
    return []


def where_filter(output: OutputDataset, shards: list[str], settings: dict, text: str) -> tuple[Where, Names]:
    """``--where`` parsed against the output's columns as ``export`` reads them (one-line errors from
    :mod:`pixart_batch.expr`), and the class names the features declare."""
    from ..expr import columns_of, parse_where

    names = S.label_names(settings)
    if shards:
        try:
            features = output.format.features(shards[0], tuple(names) if names else None)
        except Exception as exc:
            reason = first_line(exc, with_type=True)
            raise OutputError(f"{shards[0]}: unreadable shard ({reason}); nothing was written") from None
    else:
        features = S.features(names, S.score_columns(settings))
    declared = getattr(features.get(S.LABEL), "names", None)
    names = names or ([str(n) for n in declared] if declared else None)
    fields = {name: feature for name, feature in features.items() if name != S.IMAGE}
    labels = {S.LABEL: names} if names and S.LABEL in features else None
    return parse_where(text, columns_of(fields, labels)), names


def read_failures(output: OutputDataset) -> dict[str, str]:
    """``{key: error}`` of the failure files (damaged ones skipped: verify names them)."""
    import pyarrow.parquet as pq

    failures: dict[str, str] = {}
    for path in output.failure_files():
        try:
            with output.location.fs.open_input_file(path) as handle:
                rows = pq.read_table(handle, columns=[S.KEY, S.ERROR]).to_pylist()
        except Exception:
            continue
        failures.update((row[S.KEY], row[S.ERROR] or "") for row in rows)
    return failures


def stage_of(error: str) -> str:
    """The stage of a failure message (``"<stage>: <Exception>: <message>"``)."""
    stage = error.split(":", 1)[0].strip() if ":" in error else ""
    return stage if re.fullmatch(r"[a-z_]{1,32}", stage) else "other"


def _shown_rows(output: OutputDataset, shards: list[str], cards: list[Card], columns: list[str]) -> Rows:
    """Pass 2: ``(card, row)`` of the shown cards, reading only their shards' row groups that hold them."""
    wanted: dict[int, dict[int, dict[str, Card]]] = {}
    for card in cards:
        wanted.setdefault(card.shard, {}).setdefault(card.group, {})[card.key] = card
    for index, groups in sorted(wanted.items()):
        path = shards[index]
        keys = {group: set(found) for group, found in groups.items()}
        by_key = {key: card for found in groups.values() for key, card in found.items()}
        try:
            readable = output.format.readable_columns(path, columns)
            for row in output.format.rows_of_groups(path, keys, readable):
                found = by_key.get(row[S.KEY])
                if found is not None:
                    yield found, row
        except Exception:  # became unreadable since pass 1: its cards show no image
            continue


def _fill(card: Card, row: dict[str, Any], view: View) -> None:
    card.prompt, card.caption = row.get(S.PROMPT) or "", row.get(S.CAPTION) or ""
    card.seed, card.width, card.height = row.get(S.SEED), row.get(S.WIDTH), row.get(S.HEIGHT)
    for score in view.scores:
        value = row.get(score)
        card.scores[score] = float(value) if isinstance(value, (int, float)) and value == value else None


def _card_pages(scan: Scan, shown: dict[str, Card], view: View) -> tuple[dict, dict, list[CardPage]]:
    """The bucket pages (every bucket), the label pages (every label with images), the kept and dropped
    pages."""

    def chosen(stratum: tuple[str, Any]) -> list[Card]:
        return [card for card in scan.selected.get(stratum, []) if card.key in shown]

    buckets = {
        bucket: CardPage(bucket_page_name(bucket), f"bucket {S.bucket_name(*bucket)} (width x height)",
                         "in this bucket", count, chosen(("bucket", bucket)))
        for bucket, count in sorted(scan.buckets.items())
    }  # fmt: skip
    labels = {
        label: CardPage(label_page_name(label), f"label: {view.label_name(label)}", "with this label", count,
                        chosen(("label", label)))
        for label, count in sorted(scan.labels.items())
    }  # fmt: skip
    kept_pages = []
    if view.where is not None:
        kept = scan.kept.get(("all", None), 0)
        kept_pages = [
            CardPage("kept.html", "kept by --where", "that --where keeps", kept, chosen(("where", True))),
            CardPage("dropped.html", "dropped by --where", "that --where drops", scan.rows - kept, []),
        ]
        kept_pages[1].cards = chosen(("where", False))
    return buckets, labels, kept_pages


def _gallery_root(output: OutputDataset) -> str:
    location = output.location
    root = location.join(GALLERY_DIR)
    for inner in ("", THUMBS_DIR, PLOTS_DIR):
        path = posixpath.join(root, inner) if inner else root
        if is_symlink(location, path):
            raise OutputError(f"{path}: is a symbolic link; this tool does not follow links in its output")
    return root


def _remove_stale(location: Location, root: str, written: set[str]) -> None:
    """Files of an earlier gallery that this one no longer links (only names this module writes)."""
    for path in list_files(location, root):
        relative = posixpath.relpath(path, root)
        if _OURS.match(relative) and relative not in written:
            try:
                location.fs.delete_file(path)
            except OSError:
                pass


def build_gallery(
    uri: str,
    per_bucket: int = DEFAULT_PER_BUCKET,
    max_images: int = DEFAULT_MAX_IMAGES,
    thumb_size: int = DEFAULT_THUMB_SIZE,
    image_format: str = "webp",
    where: str | None = None,
) -> GalleryResult:
    """Write ``OUTPUT/gallery/`` (see :mod:`pixart_batch.gallery`); refuses a directory that is not an
    output, and a bad ``where`` (one line, nothing written)."""
    check_options(per_bucket, max_images, thumb_size, image_format)
    output = open_output(uri)  # not ours, or damaged metadata: one line, nothing written
    root = _gallery_root(output)
    settings = output.read_settings() or {}
    shards = output.shard_files()
    names = S.label_names(settings)
    condition = None
    if where is not None:
        condition, names = where_filter(output, shards, settings, where)
    columns = _columns(output, shards)
    scores = tuple(s for s in SCORE_COLUMNS if s in columns or s in S.score_columns(settings))
    labelled = S.LABEL in columns or names is not None
    failures = read_failures(output)
    sampler = Sampler(output.format, per_bucket, scores, labelled, condition, failures)
    scan = sampler.run(shards)
    view = View(output.uri, names if labelled else None, scores, where)
    if labelled and view.names is None:
        view.names = [f"label {n}" for n in range(max(scan.labels, default=-1) + 1)]
    shown = hand_out(scan.selected, per_bucket, max_images)
    failed = Counter(stage_of(e) for key, e in failures.items() if key not in scan.failed_committed)
    stages = dict(failed.most_common())
    return _write(output, root, scan, shown, view, stages, settings, thumb_size, image_format)


def _write(
    output: OutputDataset,
    root: str,
    scan: Scan,
    shown: dict[str, Card],
    view: View,
    failures: dict[str, int],
    settings: dict[str, Any],
    thumb_size: int,
    image_format: str,
) -> GalleryResult:
    from .figures import make_plots, medians

    location = output.location
    extension = FORMATS[image_format][0]
    written: set[str] = set()
    undecodable = 0
    if location.is_local:
        remove_temporaries(location, root, older_than_s=3600)
    shards = output.shard_files() if shown else []
    cards = sorted(shown.values(), key=lambda card: card.rank)
    columns = [*_CARD_COLUMNS, *view.scores]
    for card, row in _shown_rows(output, shards, cards, columns) if shards else ():
        _fill(card, row, view)
        try:
            data = thumbnail((row.get(S.IMAGE) or {}).get("bytes") or b"", thumb_size, image_format)
        except Exception:
            undecodable += 1
            continue
        card.thumb = thumb_name(card.key, extension)
        write_bytes_atomic(location, posixpath.join(root, card.thumb), data)
        written.add(card.thumb)
    buckets, labels, kept_pages = _card_pages(scan, shown, view)
    overview = Overview(view, scan.rows, dict(sorted(scan.buckets.items())), {}, buckets, labels, kept_pages)
    if view.names is not None:
        listed = {n: scan.labels.get(n, 0) for n in range(len(view.names))}
        overview.labels = listed | dict(sorted(scan.labels.items()))
    overview.kept, overview.failures, overview.settings = dict(scan.kept), failures, settings
    overview.skipped, overview.undecodable = scan.skipped, undecodable
    overview.medians, overview.score_note = medians(scan, view)
    overview.plots = make_plots(overview, scan)
    for plot in overview.plots:
        write_bytes_atomic(location, posixpath.join(root, PLOTS_DIR, plot.name), plot.svg)
        written.add(f"{PLOTS_DIR}/{plot.name}")
    every = CardPage("all.html", "all shown images", "in the output", scan.rows, cards)
    for shown_page in [*buckets.values(), *labels.values(), *kept_pages, *([every] if scan.rows else [])]:
        text = card_page(view, shown_page, kept_pages, label_filter=not shown_page.file.startswith("label-"))
        write_bytes_atomic(location, posixpath.join(root, shown_page.file), text.encode())
        written.add(shown_page.file)
    write_bytes_atomic(location, posixpath.join(root, "index.html"), index_page(overview, cards).encode())
    _remove_stale(location, root, written)
    kept = scan.kept.get(("all", None), 0) if view.where is not None else None
    result = GalleryResult(location.join(GALLERY_DIR, "index.html"), scan.rows, len(shown), len(buckets))
    result.skipped_shards, result.undecodable, result.labels = scan.skipped, undecodable, len(scan.labels)
    result.kept, result.plots = kept, len(overview.plots)
    return result
