"""What the gallery reads of a larger output (the synthetic one of benchmarks/gallery_scale.py, no model):
pass 1 only the small columns of every row, pass 2 the image bytes of a few row groups only, the scores
behind the plots a bounded sample of whole row groups."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pixart_batch import schema as S
from pixart_batch.cli import main
from pixart_batch.output.formats.parquet import ParquetFormat

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "gallery_scale.py"
ROWS, PER_SHARD, GROUP = 6000, 1000, 50


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("gallery_scale", BENCHMARK)
    assert spec and spec.loader
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    output = tmp_path_factory.mktemp("scale") / "out"
    benchmark.make_output(output, ROWS, PER_SHARD, GROUP)
    return output


def test_each_pass_reads_only_what_it_needs(synthetic, monkeypatch, capsys):
    first: list[list[str]] = []
    second: list[tuple[list[str], int]] = []
    row_groups, rows_of_groups = ParquetFormat.row_groups, ParquetFormat.rows_of_groups

    def spy_first(self, path, columns):
        first.append(list(columns))
        return row_groups(self, path, columns)

    def spy_second(self, path, groups, columns):
        second.extend((list(columns), group) for group in groups)
        return rows_of_groups(self, path, groups, columns)

    monkeypatch.setattr(ParquetFormat, "row_groups", spy_first)
    monkeypatch.setattr(ParquetFormat, "rows_of_groups", spy_second)
    where = "clip_score >= 28 and seed > 1000"
    assert main(["gallery", str(synthetic), "--per-bucket", "5", "--thumb-size", "16", "--where", where]) == 0
    out = capsys.readouterr().out
    small = {S.KEY, S.BUCKET_WIDTH, S.BUCKET_HEIGHT, S.LABEL, S.CLIP_SCORE, S.AESTHETIC_SCORE, S.SEED}
    assert len(first) == ROWS // PER_SHARD and all(
        set(columns) <= small for columns in first
    )  # every shard, once
    assert all(S.SEED in columns for columns in first)  # what --where names
    assert {S.IMAGE, S.PROMPT, S.CAPTION} <= set(second[0][0])
    # 3 buckets + 10 labels + kept / dropped, 5 images each: a few of the 120 row groups hold them all
    # (each of these groups holds every bucket and label), and only those groups' images are read.
    shown = int(out.split()[1])
    assert 5 * 3 <= shown <= 5 * 15
    assert len(second) <= 6, len(second)


def test_the_scores_behind_the_plots_are_a_bounded_sample_of_row_groups(synthetic, monkeypatch):
    from pixart_batch.gallery import sample

    monkeypatch.setattr(sample, "SCORE_ROWS", 1000)
    assert main(["gallery", str(synthetic), "--per-bucket", "2", "--thumb-size", "16"]) == 0
    index = (synthetic / "gallery" / "index.html").read_text(encoding="utf-8")
    assert f"over 1000 of {ROWS} images (whole row groups" in index  # whole groups of 50: exactly 1000
    assert f"{ROWS} images in 3 buckets" in index  # the counts stay exact
    scores = (synthetic / "gallery" / "plots" / "scores.svg").read_text(encoding="utf-8")
    assert "clip_score: 1000 images" in scores
