"""The gallery's HTML pieces: escaping, a card, the filter bar, a page. Every value from the output (a
caption, a prompt, a class name, a key, a setting) goes through :func:`escape` (text and attributes) or
:func:`json_data` (the page's data, in a ``<script type="application/json">`` that no ``</script>``,
``<!--`` or ``&`` inside a string can end or change)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from .. import schema as S
from .assets import CSS, JS
from .sample import Card

MAX_TEXT = 2000
"""Characters of a prompt or caption shown on a card (the rest is cut, with its length noted)."""
SCORE_LABELS = {S.CLIP_SCORE: "CLIP", S.AESTHETIC_SCORE: "aesthetic"}


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def json_data(value: Any) -> str:
    """``value`` as JSON safe inside a ``<script>`` element (``<``, ``>``, ``&`` and the line separators
    as ``\\u`` escapes, which JSON reads back as the same characters)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char in ("<", ">", "&", "\u2028", "\u2029"):
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text)} characters)"


@dataclass
class View:
    """What every page of one gallery shares: the output, its class names, its score columns, ``--where``."""

    uri: str
    names: list[str] | None = None
    """Class names by id (None: an unlabelled output)."""
    scores: tuple[str, ...] = ()
    where: str | None = None

    @property
    def labelled(self) -> bool:
        return self.names is not None

    def label_name(self, label: int | None) -> str:
        if label is None:
            return ""
        if self.names is not None and 0 <= label < len(self.names):
            return self.names[label]
        return f"label {label}"


def bucket_page_name(bucket: tuple[int, int]) -> str:
    return f"bucket-{S.bucket_name(*bucket)}.html"


def label_page_name(label: int) -> str:
    return f"label-{int(label)}.html"


def size_text(card: Card) -> str:
    return f"{card.width}x{card.height}" if card.width is not None else "?"


def score_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def filter_text(card: Card, view: View) -> str:
    """What the word filter searches in a card (lower case): caption, prompt, label, key, seed, size."""
    label = view.label_name(card.label)
    parts = [card.caption, card.prompt, label, card.key, str(card.seed), size_text(card)]
    return clip(" ".join(parts).lower())


def card_data(card: Card, view: View) -> dict[str, Any]:
    """A card's entry in the page's data (see :mod:`.assets`)."""
    scores = {name: round(value, 4) for name, value in card.scores.items() if value is not None}
    return {"t": filter_text(card, view), "l": card.label, "s": scores, "w": card.kept}


def _chips(card: Card, view: View, links: bool) -> str:
    chips = []
    if card.label is not None:
        name = escape(view.label_name(card.label))
        chips.append(
            f'<a class="chip label" href="{label_page_name(card.label)}" title="label">{name}</a>'
            if links
            else f'<span class="chip label" title="label">{name}</span>'
        )
    for score in view.scores:
        value = card.scores.get(score)
        text = f"{SCORE_LABELS[score]} {score_text(value)}"
        chips.append(f'<span class="chip score" title="{score}">{text}</span>')
    if card.bucket is not None:
        name = S.bucket_name(*card.bucket)
        title = 'title="bucket (width x height)"'
        chips.append(
            f'<a class="chip" href="{bucket_page_name(card.bucket)}" {title}>{name}</a>'
            if links
            else f'<span class="chip" {title}>{name}</span>'
        )
    if card.kept is not None:
        kept = '<span class="chip kept">kept</span>'
        chips.append(kept if card.kept else '<span class="chip drop">dropped</span>')
    return f'<div class="chips">{"".join(chips)}</div>'


def card_html(card: Card, view: View, index: int, compact: bool = False, link: str | None = None) -> str:
    """A card: the thumbnail, chips (label, scores, bucket, kept / dropped), the caption and the prompt
    when it differs (clamped, with a "more" button when cut), key, seed and size."""
    if card.thumb is not None:
        alt = escape(clip(card.caption))
        image = f'<img src="{escape(card.thumb)}" alt="{alt}" title="{escape(card.key)}">'
    else:
        image = '<div class="noimg">image does not decode</div>'
    if link is not None:
        image = f'<a href="{escape(link)}">{image}</a>'
    state = "" if card.kept is None else (" kept" if card.kept else " dropped")
    parts = [
        f'<figure class="card{state}" data-i="{index}" data-key="{escape(card.key)}" '
        f'data-text="{escape(filter_text(card, view))}">',
        image,
        _chips(card, view, links=not compact),
    ]
    if not compact:
        parts.append(f'<p class="cap clamp">{escape(clip(card.caption))}</p>')
        if card.prompt != card.caption:
            parts.append(f'<p class="prompt clamp">{escape(clip(card.prompt))}</p>')
        parts.append('<button type="button" class="more" hidden>more</button>')
        parts.append(
            f'<p class="meta">{escape(card.key)} · <span class="num">seed {escape(card.seed)}</span> · '
            f'<span class="num">{escape(size_text(card))}</span></p>'
        )
    parts.append("</figure>")
    return "\n".join(parts)


def _option(value: Any, text: str, **attributes: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{escape(v)}"' for name, v in attributes.items())
    return f'<option value="{escape(value)}"{extra}>{escape(text)}</option>'


def _select(name: str, label: str, options: list[str]) -> str:
    return f'<select id="{name}" aria-label="{escape(label)}">{"".join(options)}</select>'


def filter_bar(view: View, total: int, label: bool = True, noun: str = "shown") -> str:
    """The bar of every page: words, label, sort, score range, kept / dropped, the count."""
    parts = [
        '<input id="q" type="search" placeholder="words in caption, prompt, label, key, seed" '
        'aria-label="filter by words" autocomplete="off">'
    ]
    if label and view.names is not None:
        names = [_option(n, name, data_name=name) for n, name in enumerate(view.names)]
        parts.append(_select("label", "label", [_option("", "all labels"), *names]))
    if view.scores:
        sorts = [_option("", "sample order")]
        for score in view.scores:
            sorts.append(_option(f"{score}:desc", f"{score}: best first"))
            sorts.append(_option(f"{score}:asc", f"{score}: worst first"))
        parts.append(_select("sort", "sort", sorts))
        scores = _select("score", "score", [_option(score, score) for score in view.scores])
        parts.append(
            f"<label>{scores} from "
            '<input id="min" type="number" step="any" aria-label="lowest score"> to '
            '<input id="max" type="number" step="any" aria-label="highest score"></label>'
        )
    if view.where is not None:
        choices = [("", "kept and dropped"), ("kept", "kept by --where"), ("dropped", "dropped by --where")]
        kept = [_option(value, text) for value, text in choices]
        parts.append(_select("keep", "kept or dropped by --where", kept))
    parts.append(f'<span><span class="count" id="shown">{total}</span> of {total} {noun}</span>')
    return f'<div class="bar">{"".join(parts)}</div>'


def page(title: str, subtitle: str, bar: str, body: str, data: list[dict[str, Any]], nav: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f'<body data-cards="{len(data)}">\n<h1>{escape(title)}</h1>\n'
        f'<p class="sub">{subtitle}</p>\n{nav}\n{bar}\n'
        f'{body}\n<script type="application/json" id="data">{json_data(data)}</script>\n'
        f"<script>{JS}</script>\n</body>\n</html>\n"
    )


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
