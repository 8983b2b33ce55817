"""The gallery's plots, rendered at build time with matplotlib to SVG files (``gallery/plots/``).

matplotlib is imported here, inside the functions, and nowhere else: ``import pixart_batch``,
``generate`` and the Ray workers never load it. No pyplot and no GUI backend: each plot is a
``matplotlib.figure.Figure`` saved as SVG (text kept as text, so any script shows; math text off, so
a ``$`` in a class name is a dollar sign; fixed ids and no date, so a re-run writes the same bytes).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_BARS = 40
"""Bars (or boxes) per plot at most: with more classes, the lowest and the highest half of them."""
NAME_CHARS = 40
KEPT, DROPPED, BAR, MEDIAN = "#2e7d32", "#b0b0b0", "#4c72b0", "#c62828"
_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "pixart-batch-gallery",
    "text.parse_math": False,
    "text.usetex": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}


@dataclass
class Plot:
    name: str
    """The file's name under ``plots/``."""
    title: str
    svg: bytes


def short(name: Any) -> str:
    """A class or bucket name as a plot shows it: one line, at most :data:`NAME_CHARS` characters."""
    text = " ".join(str(name).split())
    return text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 1] + "…"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _svg(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _render(function: Any, *args: Any) -> bytes:
    """``function(*args)`` → a figure, as SVG, under the gallery's style (warnings, such as a glyph
    the measuring font lacks, are not the user's business: the browser draws the text)."""
    import warnings

    import matplotlib

    with matplotlib.rc_context(cast(Any, _STYLE)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _svg(function(*args))


def _height(bars: int) -> float:
    return 1.2 + 0.26 * bars


def _ends(names: Sequence[str], key: Any) -> tuple[list[str], str]:
    """At most :data:`MAX_BARS` of ``names`` ordered by ``key``: all, or the lowest and highest halves."""
    ordered = sorted(names, key=key)
    if len(ordered) <= MAX_BARS:
        return ordered, ""
    half = MAX_BARS // 2
    return ordered[:half] + ordered[-half:], f" ({half} lowest and {half} highest of {len(ordered)})"


def counts_plot(name: str, title: str, counts: dict[str, int]) -> Plot:
    """Horizontal bars: images per bucket or per label (in the order given, the first on top)."""
    names, note = (list(counts), "") if len(counts) <= MAX_BARS else _ends(list(counts), lambda n: counts[n])

    def draw() -> Figure:
        figure = _figure(7.5, _height(len(names)))
        axes = figure.add_subplot()
        bars = axes.barh(range(len(names)), [counts[n] for n in names], color=BAR)
        axes.bar_label(bars, padding=3, fontsize=8)
        axes.set_yticks(range(len(names)), [short(n) for n in names])
        axes.invert_yaxis()
        axes.set_xlabel("images")
        axes.set_title(title + note, loc="left")
        axes.margins(x=0.12)
        return figure

    return Plot(name, title + note, _render(draw))


def _histogram(axes: Axes, values: np.ndarray, score: str) -> None:
    import numpy as np

    finite = values[np.isfinite(values)]
    axes.hist(finite, bins=min(40, max(5, int(np.sqrt(finite.size)))), color=BAR, alpha=0.85)
    median = float(np.median(finite))
    axes.axvline(median, color=MEDIAN, linestyle="--", linewidth=1.5)
    axes.annotate(
        f"median {median:.2f}", (median, 1), xycoords=("data", "axes fraction"), xytext=(4, -12),
        textcoords="offset points", color=MEDIAN, fontsize=8,
    )  # fmt: skip
    axes.set_xlabel(score)
    axes.set_ylabel("images")
    axes.set_title(f"{score}: {finite.size} images", loc="left")


def score_histograms(values: dict[str, np.ndarray], note: str) -> Plot | None:
    """The distribution of each score over every (sampled) row, its median marked."""
    import numpy as np

    present = {name: found for name, found in values.items() if np.isfinite(found).any()}
    if not present:
        return None

    def draw() -> Figure:
        figure = _figure(7.5, 2.6 * len(present))
        for row, (score, found) in enumerate(present.items(), 1):
            _histogram(figure.add_subplot(len(present), 1, row), found, score)
        if note:
            figure.suptitle(note, x=0.01, ha="left", fontsize=8, color="#555")
        return figure

    return Plot("scores.svg", "score distribution" + (f" ({note})" if note else ""), _render(draw))


def score_by_label(score: str, by_label: dict[str, np.ndarray]) -> Plot | None:
    """One box per label (the lowest median on top, the median line red), ``(n)`` beside each name."""
    import numpy as np

    finite = {name: found[np.isfinite(found)] for name, found in by_label.items()}
    finite = {name: found for name, found in finite.items() if found.size}
    if len(finite) < 1:
        return None
    names, note = _ends(list(finite), lambda n: (float(np.median(finite[n])), n))
    title = f"{score} per label, lowest median first{note}"

    def draw() -> Figure:
        figure = _figure(7.5, _height(len(names)) + 0.3)
        axes = figure.add_subplot()
        axes.boxplot(
            [finite[n] for n in names], orientation="horizontal", widths=0.6, showfliers=True,
            medianprops={"color": MEDIAN, "linewidth": 2}, flierprops={"markersize": 3, "alpha": 0.5},
            patch_artist=True, boxprops={"facecolor": "#dde6f3", "edgecolor": BAR},
        )  # fmt: skip
        axes.set_yticks(range(1, len(names) + 1), [f"{short(n)} ({finite[n].size})" for n in names])
        axes.invert_yaxis()
        axes.set_xlabel(score)
        axes.set_title(title, loc="left")
        return figure

    return Plot(f"{score}-by-label.svg", title, _render(draw))


def kept_plot(title: str, kept: dict[str, tuple[int, int]]) -> Plot:
    """Stacked bars: what ``--where`` keeps (green) and drops (grey) per label or bucket, the smallest
    share kept on top."""
    names, note = _ends(list(kept), lambda n: (kept[n][0] / max(1, sum(kept[n])), n))

    def draw() -> Figure:
        figure = _figure(7.5, _height(len(names)) + 0.3)
        axes = figure.add_subplot()
        keep = [kept[n][0] for n in names]
        drop = [kept[n][1] for n in names]
        axes.barh(range(len(names)), keep, color=KEPT, label="kept")
        axes.barh(range(len(names)), drop, left=keep, color=DROPPED, label="dropped")
        axes.set_yticks(range(len(names)), [short(n) for n in names])
        axes.invert_yaxis()
        axes.set_xlabel("images")
        axes.set_title(title + note, loc="left")
        axes.legend(loc="lower left", bbox_to_anchor=(1.0, 0.0), frameon=False)
        return figure

    return Plot("where.svg", title + note, _render(draw))
