"""``pixart-batch gallery OUTPUT``: a static, self-contained HTML gallery in ``OUTPUT/gallery/``.

Layout::

    OUTPUT/gallery/index.html               counts per bucket, settings, links, a sample strip
    OUTPUT/gallery/bucket-<W>x<H>.html      one page per bucket (cards: thumbnail, caption, prompt, key, seed, size)
    OUTPUT/gallery/thumbs/<key>.webp        thumbnails (or .jpg), longest side <= --thumb-size

No external assets: inline CSS and a few lines of inline JavaScript (the text filter), relative
links only, so the folder works offline from ``file://`` and can be copied anywhere.

**The sample.** A large output holds millions of images; the gallery shows a stratified sample:
per bucket, the images whose ``sha256(key)`` is smallest (a bounded heap while the shards are
streamed), at most ``per_bucket`` per bucket and ``max_images`` in all (handed out rank by rank
across buckets, so every bucket is represented). The sample depends on the keys only: re-running
on the same output gives the same gallery, and a grown output keeps most of its sample.

**Reading.** Two passes over the committed shards, one row group at a time: the first reads only
``key`` and the bucket columns; the second reads the row groups that hold sampled images (with
their image bytes). Nothing holds more than a row group plus the sample.

**Writing.** Every file is committed atomically (:mod:`.storage`): thumbnails first, then the
bucket pages, then ``index.html``; files of an earlier gallery that the new one no longer uses
are removed last. A reader never sees half a page.
"""

from __future__ import annotations

import hashlib
import heapq
import html
import io
import json
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from . import schema as S
from .errors import OutputError, UserError
from .output import open_output
from .output.card import label_counts
from .output.formats import OutputFormat
from .output.layout import GALLERY_DIR
from .storage import Location, is_symlink, list_files, remove_temporaries, write_bytes_atomic

THUMBS_DIR = "thumbs"
DEFAULT_PER_BUCKET = 48
DEFAULT_MAX_IMAGES = 2000
DEFAULT_THUMB_SIZE = 256
FORMATS = {"webp": ("webp", "WEBP", {"quality": 80, "method": 4}), "jpeg": ("jpg", "JPEG", {"quality": 85, "optimize": True})}
STRIP_PER_BUCKET = 4
STRIP_MAX = 24
MAX_TEXT = 2000
"""Characters of a prompt or caption shown on a card (the rest is cut, with its length noted)."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_META_COLUMNS = [S.KEY, S.BUCKET_WIDTH, S.BUCKET_HEIGHT]
_CARD_COLUMNS = [S.KEY, S.PROMPT, S.CAPTION, S.SEED, S.WIDTH, S.HEIGHT, S.BUCKET_WIDTH, S.BUCKET_HEIGHT, S.IMAGE]


@dataclass
class Card:
    key: str
    rank: int
    """Position in its bucket's sample (0 = smallest hash)."""
    prompt: str = ""
    caption: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    thumb: str | None = None
    """Path of the thumbnail relative to ``gallery/`` (None: the image did not decode)."""


@dataclass
class Bucket:
    width: int
    height: int
    images: int = 0
    cards: list[Card] = field(default_factory=list)

    @property
    def name(self) -> str:
        return S.bucket_name(self.width, self.height)

    @property
    def page(self) -> str:
        return f"bucket-{self.name}.html"


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


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def _thumb_name(key: str, extension: str) -> str:
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
        raise UserError(f"--format {image_format}: this Pillow cannot write {image_format}; use --format jpeg")


def _sampled_rows(shards: OutputFormat, path: str, groups: dict[int, dict[str, Card]]):
    """Pass 2: ``(card, row)`` of the sampled rows of one shard, reading only their groups (a Parquet
    shard's row groups; the whole shard for a format that has none)."""
    try:
        keys = {group: set(cards) for group, cards in groups.items()}
        cards = {key: card for group in groups.values() for key, card in group.items()}
        for row in shards.rows_of_groups(path, keys, _CARD_COLUMNS):
            card = cards.get(row[S.KEY])
            if card is not None:
                yield card, row
    except Exception:  # became unreadable since pass 1: its cards show no image
        return


def sample(output_format: OutputFormat, shards: list[str], per_bucket: int, max_images: int):
    """Pass 1: images per bucket and the sampled keys, with where they are.

    Returns ``(buckets, wanted, skipped)``: ``wanted`` maps a shard's index to ``{row group:
    {key: card}}``; ``skipped`` lists the shards that could not be read (left out whole)."""
    heaps: dict[tuple[int, int], list[tuple[int, str, int, int]]] = defaultdict(list)
    counts: dict[tuple[int, int], int] = defaultdict(int)
    skipped: list[str] = []
    for shard_index, path in enumerate(shards):
        # This shard's own best per bucket size first, merged only once the whole shard has read.
        local: dict[tuple[int, int], list[tuple[int, str, int, int]]] = defaultdict(list)
        seen_here: dict[tuple[int, int], int] = defaultdict(int)
        try:
            for group, rows in output_format.row_groups(path, _META_COLUMNS):
                for row in rows:
                    size = (int(row[S.BUCKET_WIDTH]), int(row[S.BUCKET_HEIGHT]))
                    seen_here[size] += 1
                    _offer(local[size], (-_hash(row[S.KEY]), row[S.KEY], shard_index, group), per_bucket)
        except Exception:  # a damaged shard: verify names it, the next run sets it aside
            skipped.append(path)
            continue
        for size, entries in local.items():
            for entry in entries:
                _offer(heaps[size], entry, per_bucket)
        for size, count in seen_here.items():
            counts[size] += count
    ranked = {size: sorted(heaps[size], key=lambda entry: -entry[0]) for size in counts}
    buckets = {size: Bucket(size[0], size[1], images=counts[size]) for size in sorted(counts)}
    # Hand out max_images rank by rank across the buckets (every bucket gets its first images first).
    wanted: dict[int, dict[int, dict[str, Card]]] = defaultdict(lambda: defaultdict(dict))
    taken = 0
    for rank in range(per_bucket):
        for size, bucket in buckets.items():
            if taken < max_images and rank < len(ranked[size]):
                _, key, shard_index, group = ranked[size][rank]
                card = Card(key, rank)
                bucket.cards.append(card)
                wanted[shard_index][group][key] = card
                taken += 1
    return buckets, wanted, skipped


def _offer(heap: list[tuple[int, str, int, int]], entry: tuple[int, str, int, int], size: int) -> None:
    """Keep the ``size`` smallest hashes (a max-heap of negated hashes)."""
    if len(heap) >= size and entry <= heap[0]:
        return
    if any(other[1] == entry[1] for other in heap):
        return  # the same key twice (never in a healthy output)
    if len(heap) < size:
        heapq.heappush(heap, entry)
    else:
        heapq.heapreplace(heap, entry)


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


def build_gallery(
    uri: str,
    per_bucket: int = DEFAULT_PER_BUCKET,
    max_images: int = DEFAULT_MAX_IMAGES,
    thumb_size: int = DEFAULT_THUMB_SIZE,
    image_format: str = "webp",
) -> GalleryResult:
    """Write ``OUTPUT/gallery/`` (see the module docstring); refuses a directory that is not an output."""
    check_options(per_bucket, max_images, thumb_size, image_format)
    output = open_output(uri)  # not ours, or damaged metadata: one line, nothing written
    location = output.location
    root = location.join(GALLERY_DIR)
    if is_symlink(location, root) or is_symlink(location, posixpath.join(root, THUMBS_DIR)):
        raise OutputError(f"{root}: is a symbolic link; this tool does not follow links in its output")
    settings = output.read_settings()
    shards = output.shard_files()
    buckets, wanted, skipped = sample(output.format, shards, per_bucket, max_images)

    extension = FORMATS[image_format][0]
    written: set[str] = set()
    undecodable = 0
    if location.is_local:
        remove_temporaries(location, root, older_than_s=3600)
    for shard_index, groups in sorted(wanted.items()):
        for card, row in _sampled_rows(output.format, shards[shard_index], groups):
            card.prompt, card.caption = row[S.PROMPT] or "", row[S.CAPTION] or ""
            card.seed, card.width, card.height = row[S.SEED], row[S.WIDTH], row[S.HEIGHT]
            try:
                data = thumbnail((row[S.IMAGE] or {}).get("bytes") or b"", thumb_size, image_format)
            except Exception:
                undecodable += 1
                continue
            card.thumb = _thumb_name(card.key, extension)
            write_bytes_atomic(location, posixpath.join(root, card.thumb), data)
            written.add(card.thumb)

    ordered = list(buckets.values())
    for bucket in ordered:
        write_bytes_atomic(location, posixpath.join(root, bucket.page), bucket_page(output.uri, bucket).encode())
        written.add(bucket.page)
    names = S.label_names(settings)
    labels = label_counts(output, names) if names is not None and output.plan_files() else None
    index = index_page(output.uri, ordered, settings, skipped, undecodable, labels)
    write_bytes_atomic(location, posixpath.join(root, "index.html"), index.encode())
    written.add("index.html")
    _remove_stale(location, root, written)
    total = sum(bucket.images for bucket in ordered)
    shown = sum(len(bucket.cards) for bucket in ordered)
    return GalleryResult(location.join(GALLERY_DIR, "index.html"), total, shown, len(ordered), skipped, undecodable)


def _remove_stale(location: Location, root: str, written: set[str]) -> None:
    """Files of an earlier gallery that this one no longer links (only names this module writes)."""
    ours = re.compile(r"^(bucket-\d+x\d+\.html|thumbs/[A-Za-z0-9_-]+\.(webp|jpg))$")
    for path in list_files(location, root):
        relative = posixpath.relpath(path, root)
        if ours.match(relative) and relative not in written:
            try:
                location.fs.delete_file(path)
            except OSError:
                pass


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:16px 24px;background:#f4f4f2;color:#1d1d1f}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
a{color:#0b57d0}
.sub{color:#555;margin:0 0 12px;overflow-wrap:anywhere}
.bar{display:flex;gap:12px;align-items:center;margin:12px 0}
#q{font:inherit;padding:6px 10px;width:min(480px,100%);border:1px solid #aaa;border-radius:6px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.strip{grid-template-columns:repeat(auto-fill,minmax(210px,1fr))}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px;margin:0;min-width:0;overflow:hidden}
.card[hidden]{display:none}
.card img{display:block;max-width:100%;height:auto;margin:0 auto 6px;background:#e8e8e8}
.noimg{padding:40px 0;text-align:center;color:#a00;background:#fbeaea}
.card p{margin:2px 0;overflow-wrap:anywhere}
.text{max-height:10em;overflow:auto}
.cap{font-weight:600}
.prompt{color:#333}
.cap::before,.prompt::before{font:600 11px ui-monospace,monospace;color:#777;margin-right:6px;text-transform:uppercase}
.cap::before{content:"caption"}.prompt::before{content:"prompt"}
.meta{color:#666;font-size:12px;font-family:ui-monospace,monospace}
.num{white-space:nowrap;word-break:keep-all;overflow-wrap:normal}
.warn{color:#a00}
"""

# The filter: words (case-insensitive) that every shown card's text contains; "#q=..." in the
# address sets it on load. After load, <body> records how many images loaded and how many did not
# (data-images-loaded / data-images-broken), for tests and a quick look in the inspector.
_JS = """
(function () {
  var q = document.getElementById('q'), out = document.getElementById('shown');
  var cards = [].slice.call(document.querySelectorAll('.card'));
  // The index counts over every image its buckets show (their texts in #texts), not only its strip.
  var all = document.getElementById('texts');
  var texts = all ? JSON.parse(all.textContent) : null;
  function apply() {
    var words = q.value.toLowerCase().split(/\\s+/).filter(Boolean), n = 0;
    function matches(t) { return words.every(function (w) { return t.indexOf(w) >= 0; }); }
    cards.forEach(function (c) {
      var ok = matches(c.getAttribute('data-text') || '');
      c.hidden = !ok;
      if (ok && !texts) n++;
    });
    if (texts) texts.forEach(function (t) { if (matches(t)) n++; });
    document.body.setAttribute('data-visible', String(n));
    if (out) out.textContent = String(n);
  }
  var m = /[#&]q=([^&]*)/.exec(location.hash);
  if (m) { try { q.value = decodeURIComponent(m[1]); } catch (e) { q.value = m[1]; } }
  q.addEventListener('input', function () {
    apply();
    try { history.replaceState(null, '', '#q=' + encodeURIComponent(q.value)); } catch (e) {}
  });
  apply();
  window.addEventListener('load', function () {
    var ok = 0, bad = 0;
    [].forEach.call(document.images, function (i) { if (i.complete && i.naturalWidth > 0) ok++; else bad++; });
    document.body.setAttribute('data-images-loaded', String(ok));
    document.body.setAttribute('data-images-broken', String(bad));
  });
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text)} characters)"


def _page(title: str, subtitle: str, body: str, cards: int, label: str = "shown") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f'<body data-cards="{cards}">\n<h1>{_e(title)}</h1>\n<p class="sub">{subtitle}</p>\n'
        '<div class="bar"><input id="q" type="search" placeholder="filter: words in prompt, caption, key, seed" '
        f'aria-label="filter" autocomplete="off"> <span><span id="shown">{cards}</span> of {cards} {label}</span></div>\n'
        f"{body}\n<script>{_JS}</script>\n</body>\n</html>\n"
    )


def _size(card: Card) -> str:
    return f"{card.width}x{card.height}" if card.width is not None else "?"


def _text(card: Card) -> str:
    """What the filter searches in a card (lower case)."""
    return _clip(" ".join([card.caption, card.prompt, card.key, str(card.seed), _size(card)]).lower())


def _card(card: Card, compact: bool = False, link: str | None = None) -> str:
    size = _size(card)
    if card.thumb is not None:
        image = f'<img src="{_e(card.thumb)}" alt="{_e(_clip(card.caption))}" title="{_e(card.key)}">'
    else:
        image = '<div class="noimg">image does not decode</div>'
    if link is not None:
        image = f'<a href="{_e(link)}">{image}</a>'
    parts = [f'<figure class="card" data-key="{_e(card.key)}" data-text="{_e(_text(card))}">', image]
    if not compact:  # one scroll box for both texts, each labelled (by CSS); the caption only when it differs
        caption = f'<p class="cap">{_e(_clip(card.caption))}</p>' if card.caption != card.prompt else ""
        parts.append(f'<div class="text">{caption}<p class="prompt">{_e(_clip(card.prompt))}</p></div>')
    parts += [
        f'<p class="meta">{_e(card.key)} · <span class="num">seed {_e(card.seed)}</span> · '
        f'<span class="num">{_e(size)}</span></p>',
        "</figure>",
    ]
    return "\n".join(parts)


def bucket_page(uri: str, bucket: Bucket) -> str:
    cards = "\n".join(_card(card) for card in bucket.cards)
    more = (
        f" — a sample of {len(bucket.cards)} (the same sample every time: smallest sha256 of the key)"
        if len(bucket.cards) < bucket.images
        else ""
    )
    subtitle = f'<a href="index.html">← all buckets</a> · {_e(uri)} · {bucket.images} images in this bucket{more}'
    body = f'<div class="grid">\n{cards}\n</div>'
    return _page(f"bucket {bucket.name} (width x height)", subtitle, body, len(bucket.cards))


def index_page(
    uri: str,
    buckets: list[Bucket],
    settings: dict[str, Any] | None,
    skipped: list[str],
    undecodable: int,
    labels: dict[str, int] | None = None,
) -> str:
    total = sum(bucket.images for bucket in buckets)
    shown = sum(len(bucket.cards) for bucket in buckets)
    parts: list[str] = []
    if not buckets:
        parts.append('<p class="empty">No images yet: this output has no committed shards. Run generate, then gallery again.</p>')
    else:
        rows = "\n".join(
            f'<tr><td><a href="{_e(b.page)}">{_e(b.name)}</a></td><td>{b.images}</td><td>{len(b.cards)}</td></tr>'
            for b in buckets
        )
        parts.append(
            "<h2>Buckets</h2>\n<table><tr><th>bucket (width x height)</th><th>images</th><th>shown</th></tr>\n"
            f"{rows}\n<tr><th>total</th><th>{total}</th><th>{shown}</th></tr></table>"
        )
        if labels:
            rows = "\n".join(f"<tr><td>{_e(name)}</td><td>{count}</td></tr>" for name, count in labels.items())
            parts.append(f"<h2>Labels</h2>\n<table><tr><th>label</th><th>images</th></tr>\n{rows}</table>")
        strip: list[str] = []
        for bucket in buckets:
            strip += [_card(card, compact=True, link=bucket.page) for card in bucket.cards[:STRIP_PER_BUCKET]]
        parts.append(f'<h2>Sample</h2>\n<div class="grid strip">\n{chr(10).join(strip[:STRIP_MAX])}\n</div>')
    if skipped:
        parts.append(
            f'<p class="warn">{len(skipped)} unreadable shards were left out (pixart-batch verify names them), e.g. '
            f"{_e(skipped[0])}</p>"
        )
    if undecodable:
        parts.append(f'<p class="warn">{undecodable} sampled images do not decode (pixart-batch verify names them)</p>')
    if settings:
        rows = "\n".join(
            f"<tr><th>{_e(name)}</th><td>{_e(readable(value))}</td></tr>" for name, value in sorted(settings.items())
        )
        parts.append(f"<h2>Settings (settings.json)</h2>\n<table>\n{rows}\n</table>")
    # The filter counts over every image the bucket pages show; the strip shows the matching ones of its own.
    texts = json.dumps([_text(card) for bucket in buckets for card in bucket.cards], ensure_ascii=False)
    parts.append(f'<script type="application/json" id="texts">{texts.replace("<", chr(92) + "u003c")}</script>')
    subtitle = f"{_e(uri)} · {total} images in {len(buckets)} buckets · {shown} shown"
    return _page("pixart-batch gallery", subtitle, "\n".join(parts), shown, "images match (all buckets)")


def readable(value: Any) -> str:
    """A setting as text: strings as they are (an empty one as "(empty)"), ``null`` as —, lists joined,
    objects as ``name: value``."""
    if value is None:
        return "—"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(readable(item) for item in value) if value else "—"
    if isinstance(value, dict):
        return "; ".join(f"{name}: {readable(item)}" for name, item in value.items()) if value else "—"
    return str(value)
