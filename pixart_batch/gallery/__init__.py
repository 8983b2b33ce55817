"""``pixart-batch gallery OUTPUT [--where EXPR]``: a static, self-contained HTML gallery in
``OUTPUT/gallery/``.

Layout::

    OUTPUT/gallery/index.html               a sample strip, the plots, images per bucket and label, settings
    OUTPUT/gallery/all.html                 every shown image
    OUTPUT/gallery/bucket-<W>x<H>.html      one page per bucket
    OUTPUT/gallery/label-<id>.html          one page per label (a labelled output)
    OUTPUT/gallery/kept.html, dropped.html  what ``--where EXPR`` would export, and what it would leave out
    OUTPUT/gallery/plots/*.svg              images per bucket and label, score distributions, failures, kept
    OUTPUT/gallery/thumbs/<key>.webp        thumbnails (or .jpg), longest side <= --thumb-size

A card says what its row is: the thumbnail, the label, the scores, the bucket (and with ``--where``
whether it is kept), the caption and the prompt when it differs (clamped, a "more" button when cut),
key, seed and size. Every page can sort by any score (best or worst first) and filter by words,
label, score range and kept / dropped, with counts that follow; all of it is inline CSS and
JavaScript over data embedded in the page (:mod:`.assets`), relative links only: the folder works
offline from ``file://`` and can be copied anywhere. The plots are SVG files rendered at build time
with matplotlib (:mod:`.plots`, the only module that imports it).

**Scale** (:mod:`.sample`). Pass 1 reads only the small columns of every row (key, bucket, label, scores,
what ``--where`` names), one row group at a time: counts are exact, the scores behind the plots are a
bounded sample of whole row groups, and the images shown are, per page, the rows of smallest rank
``(sha256 of the row group, sha256 of the key)``, at most ``per_bucket`` per page and ``max_images`` in
all (handed out rank by rank across pages, so every bucket and label is represented). Pass 2 reads
the image bytes of the row groups that hold shown images, and nothing else. The sample depends on
the output only: re-running gives the same gallery, byte for byte.
"""

from __future__ import annotations

from .build import (
    DEFAULT_MAX_IMAGES,
    DEFAULT_PER_BUCKET,
    DEFAULT_THUMB_SIZE,
    FORMATS,
    GalleryResult,
    build_gallery,
    check_options,
    thumbnail,
)
from .html import MAX_TEXT, View, card_html, escape, json_data, readable
from .sample import Card, rank_hash

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_PER_BUCKET",
    "DEFAULT_THUMB_SIZE",
    "FORMATS",
    "MAX_TEXT",
    "Card",
    "GalleryResult",
    "View",
    "build_gallery",
    "card_html",
    "check_options",
    "escape",
    "json_data",
    "rank_hash",
    "readable",
    "thumbnail",
]
