"""Which plots a gallery shows, from what pass 1 found: images per bucket and label, the scores (over
every row, and per label, medians marked), failures per stage, and what ``--where`` keeps and drops."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import schema as S
from . import plots as P
from .html import View
from .sample import Scan

if TYPE_CHECKING:
    from .pages import Overview


def _unique(names: list[tuple[int, str]]) -> dict[int, str]:
    """Names by id, an id added where two ids share a name (so no bar hides another)."""
    seen = [name for _, name in names]
    return {number: name if seen.count(name) == 1 else f"{name} #{number}" for number, name in names}


def medians(scan: Scan, view: View) -> tuple[dict[int, dict[str, float]], str]:
    """Per label id, each score's median over the rows whose scores pass 1 kept; and a note when those
    are not every row."""
    import numpy as np

    scores = scan.scores
    if scores is None or not scores.rows:
        return {}, ""
    found: dict[int, dict[str, float]] = {}
    for label in sorted(set(scores.labels.tolist()) - {-1}):
        mask = scores.labels == label
        for name, values in scores.values.items():
            picked = values[mask]
            picked = picked[np.isfinite(picked)]
            if picked.size:
                found.setdefault(label, {})[name] = float(np.median(picked))
    note = ""
    if scores.rows < scan.rows:
        how = "whole row groups of smallest hash, the same each time"
        note = f"over {scores.rows} of {scan.rows} images ({how})"
    return found, note


def _kept(overview: Overview, names: dict[int, str]) -> dict[str, tuple[int, int]]:
    """``(kept, dropped)`` by ``--where`` per label (per bucket for an unlabelled output)."""
    found = {}
    if overview.labels:
        for label, count in overview.labels.items():
            keep = overview.kept.get(("label", label), 0)
            found[names[label]] = (keep, count - keep)
        return found
    for bucket, count in overview.buckets.items():
        keep = overview.kept.get(("bucket", bucket), 0)
        found[S.bucket_name(*bucket)] = (keep, count - keep)
    return found


def make_plots(overview: Overview, scan: Scan) -> list[P.Plot]:
    view = overview.view
    made: list[P.Plot | None] = []
    if overview.buckets:
        buckets = {S.bucket_name(*b): n for b, n in overview.buckets.items()}
        made.append(P.counts_plot("buckets.svg", "images per bucket", buckets))
    names = _unique([(n, view.label_name(n)) for n in overview.labels])
    if overview.labels and overview.rows:
        labels = {names[n]: c for n, c in overview.labels.items()}
        made.append(P.counts_plot("labels.svg", "images per label", labels))
    scores = scan.scores
    if scores is not None and scores.rows:
        made.append(P.score_histograms(scores.values, overview.score_note))
        if overview.labels:
            for score, values in scores.values.items():
                by_label = {names[n]: values[scores.labels == n] for n in overview.labels if n in names}
                made.append(P.score_by_label(score, by_label))
    if overview.failures:
        title = "failed images per stage (not in the dataset)"
        made.append(P.counts_plot("failures.svg", title, overview.failures))
    if view.where is not None and overview.rows:
        per = "label" if overview.labels else "bucket"
        title = f"kept (green) and dropped (grey) by --where, per {per}"
        made.append(P.kept_plot(title, _kept(overview, names)))
    return [plot for plot in made if plot is not None]
