"""The gallery's pages: one per bucket, per label and (with ``--where``) for the kept and the dropped
images, ``all.html`` (every shown image) and ``index.html`` (the sample strip, the plots, the tables,
the export preview, the settings). Every page has the filter bar of :func:`.html.filter_bar`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import schema as S
from .html import View, card_data, card_html, escape, filter_bar, label_page_name, page, readable, score_text
from .plots import Plot
from .sample import Bucket, Card

STRIP_PER_BUCKET = 4
STRIP_MAX = 24
PLOTS_DIR = "plots"


@dataclass
class CardPage:
    """A page of cards: its file, title, what it holds (``images`` in the output) and its shown cards."""

    file: str
    title: str
    what: str
    """"in this bucket", "with this label", ... (after the number of images)."""
    images: int
    cards: list[Card]


@dataclass
class Overview:
    """What ``index.html`` shows beside the strip."""

    view: View
    rows: int
    buckets: dict[Bucket, int]
    labels: dict[int, int] = field(default_factory=dict)
    bucket_pages: dict[Bucket, CardPage] = field(default_factory=dict)
    label_pages: dict[int, CardPage] = field(default_factory=dict)
    kept_pages: list[CardPage] = field(default_factory=list)
    kept: dict[tuple[str, Any], int] = field(default_factory=dict)
    """Rows ``--where`` keeps: ``("all", None)``, ``("bucket", b)``, ``("label", id)``."""
    medians: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per label id, each score's median (over the rows whose scores were kept)."""
    score_note: str = ""
    failures: dict[str, int] = field(default_factory=dict)
    plots: list[Plot] = field(default_factory=list)
    settings: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)
    undecodable: int = 0


def _nav(extra: list[CardPage], index: bool = True) -> str:
    links = ['<a href="index.html">← index</a>'] if index else []
    links.append('<a href="all.html">all shown images</a>')
    links += [f'<a href="{p.file}">{escape(p.title)}</a>' for p in extra]
    return f'<nav class="pages">{"".join(links)}</nav>'


def card_page(view: View, shown: CardPage, extra: list[CardPage], label_filter: bool = True) -> str:
    """A page of cards (a bucket's, a label's, the kept or dropped images', or every shown image)."""
    cards = shown.cards
    body = "\n".join(card_html(card, view, i) for i, card in enumerate(cards))
    more = (
        f" — a sample of {len(cards)} (the same every time: the row groups and keys of smallest sha256)"
        if len(cards) < shown.images
        else ""
    )
    subtitle = f"{escape(view.uri)} · {shown.images} images {escape(shown.what)}{more}"
    bar = filter_bar(view, len(cards), label=label_filter)
    data = [card_data(card, view) for card in cards]
    grid = f'<div class="grid" data-cards>\n{body}\n</div>'
    return page(shown.title, subtitle, bar, grid, data, _nav(extra))


def _table(head: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    def cells(tag: str, values: list[str]) -> str:
        classes = ["class=n" if i in numeric else "" for i in range(len(values))]
        pairs = zip(classes, values, strict=True)
        return "".join(f"<{tag}{' ' if c else ''}{c}>{v}</{tag}>" for c, v in pairs)

    lines = [f"<tr>{cells('th', head)}</tr>"] + [f"<tr>{cells('td', row)}</tr>" for row in rows]
    return "<table>\n" + "\n".join(lines) + "\n</table>"


def _kept_cells(overview: Overview, stratum: tuple[str, Any], images: int) -> list[str]:
    if overview.view.where is None:
        return []
    kept = overview.kept.get(stratum, 0)
    share = f"{100 * kept / images:.0f}%" if images else "—"
    return [str(kept), str(images - kept), share]


def _buckets_section(overview: Overview) -> str:
    head = ["bucket (width x height)", "images", "shown"]
    head += ["kept", "dropped", "kept %"] if overview.view.where else []
    rows = []
    for bucket, count in overview.buckets.items():
        shown = overview.bucket_pages[bucket]
        link = f'<a href="{shown.file}">{S.bucket_name(*bucket)}</a>'
        kept = _kept_cells(overview, ("bucket", bucket), count)
        rows.append([link, str(count), str(len(shown.cards)), *kept])
    total = sum(overview.buckets.values())
    rows.append(["<b>total</b>", str(total), str(sum(len(p.cards) for p in overview.bucket_pages.values()))])
    rows[-1] += _kept_cells(overview, ("all", None), total)
    return "<h2>Buckets</h2>\n" + _table(head, rows, set(range(1, len(head))))


def _labels_section(overview: Overview) -> str:
    view = overview.view
    if not overview.labels:
        return ""
    head = ["label", "id", "images", "shown", *(f"median {s}" for s in view.scores)]
    head += ["kept", "dropped", "kept %"] if view.where else []
    rows = []
    for label, count in overview.labels.items():
        shown = overview.label_pages.get(label)
        name = escape(view.label_name(label))
        medians = overview.medians.get(label, {})
        row = [f'<a href="{label_page_name(label)}">{name}</a>' if shown else name, str(label), str(count)]
        row += [str(len(shown.cards)) if shown else "0", *(score_text(medians.get(s)) for s in view.scores)]
        rows.append(row + _kept_cells(overview, ("label", label), count))
    note = ""
    if overview.score_note and view.scores:
        note = f'<p class="sub">medians {escape(overview.score_note)}</p>'
    return "<h2>Labels</h2>\n" + _table(head, rows, set(range(1, len(head)))) + note


def _where_section(overview: Overview) -> str:
    view = overview.view
    if view.where is None:
        return ""
    kept = overview.kept.get(("all", None), 0)
    share = f" ({100 * kept / overview.rows:.1f}%)" if overview.rows else ""
    links = " · ".join(f'<a href="{p.file}">{escape(p.title)}</a> ({p.images})' for p in overview.kept_pages)
    return (
        f'<h2>Export preview</h2>\n<div class="where"><p><code>--where {escape(view.where)}</code> keeps '
        f"<b>{kept}</b> of {overview.rows} images{share} and drops {overview.rows - kept}: {links}. "
        "Every card says whether it is kept; the tables below count per bucket and label.</p>\n"
        f"<p>Export them: <code>pixart-batch export {escape(view.uri)} --where {escape(_quoted(view.where))} "
        "--to DIR</code></p></div>"
    )


def _quoted(text: str) -> str:
    """``text`` as one shell word."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _plots_section(plots: list[Plot]) -> str:
    if not plots:
        return ""
    figures = "\n".join(
        f'<figure><img src="{PLOTS_DIR}/{plot.name}" alt="{title}" title="{title}"></figure>'
        for plot, title in ((plot, escape(plot.title)) for plot in plots)
    )
    return f'<h2>Plots</h2>\n<div class="plots">\n{figures}\n</div>'


def _failures_section(failures: dict[str, int]) -> str:
    if not failures:
        return ""
    rows = [[escape(stage), str(count)] for stage, count in failures.items()]
    retry = "re-run the same generate command to retry them"
    return (
        f"<h2>Failures</h2>\n<p>{sum(failures.values())} images failed and are not in the dataset "
        f"(<code>failures/</code>; {retry}):</p>\n{_table(['stage', 'images'], rows, {1})}"
    )


def _warnings(overview: Overview) -> str:
    parts = []
    verify = "pixart-batch verify names them"
    if overview.skipped:
        parts.append(
            f'<p class="warn">{len(overview.skipped)} unreadable shards were left out ({verify}), '
            f"e.g. {escape(overview.skipped[0])}</p>"
        )
    if overview.undecodable:
        parts.append(f'<p class="warn">{overview.undecodable} sampled images do not decode ({verify})</p>')
    return "\n".join(parts)


def _settings_section(settings: dict[str, Any] | None) -> str:
    if not settings:
        return ""
    shown = {name: escape(readable(value)) for name, value in sorted(settings.items())}
    rows = "\n".join(f"<tr><th>{escape(name)}</th><td>{value}</td></tr>" for name, value in shown.items())
    return f"<h2>Settings (settings.json)</h2>\n<table>\n{rows}\n</table>"


EMPTY = "No images yet: this output has no committed shards. Run generate, then gallery again."


def _strip(overview: Overview, shown: list[Card]) -> str:
    """A few images per bucket, each linking to its bucket's page."""
    index = {card.key: i for i, card in enumerate(shown)}
    strip: list[str] = []
    for bucket in overview.bucket_pages.values():
        for card in bucket.cards[:STRIP_PER_BUCKET]:
            strip.append(card_html(card, overview.view, index[card.key], compact=True, link=bucket.file))
    cards = "\n".join(strip[:STRIP_MAX])
    return (
        '<h2>Sample</h2>\n<p class="sub">A few images per bucket; <a href="all.html">all shown images</a> '
        f'can be sorted and filtered the same way.</p>\n<div class="grid strip" data-cards>\n{cards}\n</div>'
    )


def index_page(overview: Overview, shown: list[Card]) -> str:
    """``index.html``: the strip (a few images per bucket), the export preview, the plots, the tables of
    buckets, labels and failures, the settings; its filter counts over every shown image."""
    view = overview.view
    parts = [_strip(overview, shown) if overview.buckets else f'<p class="empty">{EMPTY}</p>']
    parts += [_where_section(overview), _plots_section(overview.plots)]
    if overview.buckets:
        parts += [_buckets_section(overview), _labels_section(overview)]
    parts += [_failures_section(overview.failures), _warnings(overview), _settings_section(overview.settings)]
    total, count = overview.rows, len(overview.buckets)
    subtitle = f"{escape(view.uri)} · {total} images in {count} buckets · {len(shown)} shown"
    if overview.labels:
        subtitle += f" · {len(overview.labels)} labels"
    bar = filter_bar(view, len(shown), noun="shown images match")
    data = [card_data(card, view) for card in shown]
    body = "\n".join(part for part in parts if part)
    nav = _nav(overview.kept_pages, index=False) if overview.buckets else ""
    return page("pixart-batch gallery", subtitle, bar, body, data, nav)
