"""The three steps of "Training sets" together, on the tiny PixArt and the tiny CLIP: a class × template
file generated with scores on, then exported by score and label, balanced per label."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_config

from pixart_batch import schema as S

pytestmark = pytest.mark.slow

CLASSES = """\
classes:
  tabby cat: [tabby cat, tabby]
  goldfish:
  axolotl: an axolotl
templates: ["a photo of a {}", "a drawing of a {}", "a painting of a {}"]
images_per_class: 4
"""


def _rows(output) -> pa.Table:
    return pa.concat_tables(
        [
            pq.read_table(p, columns=[S.KEY, S.LABEL, S.CLIP_SCORE])
            for p in sorted((output / "data").rglob("*.parquet"))
        ]
    )


def test_expand_generate_with_scores_and_export_balanced(tmp_path, tiny_model, capsys):
    from datasets import ClassLabel, Value, load_dataset

    from pixart_batch.cli import main
    from pixart_batch.run import run_generate

    prompts = tmp_path / "classes.yaml"
    prompts.write_text(CLASSES)
    output = tmp_path / "out"
    config = tiny_config(
        **{"stages.score.enabled": True, "stages.score.model": "tiny", "output.rows_per_shard": 4}
    )
    report = run_generate(config, str(prompts), str(output))
    names = ["axolotl", "goldfish", "tabby cat"]
    assert report["images_generated"] == 12 and report["labels"] == dict.fromkeys(names, 4)
    dataset = load_dataset(str(output), split="train", cache_dir=str(tmp_path / "hf")).remove_columns("image")
    assert dataset.features[S.LABEL] == ClassLabel(names=names) and dataset.features[S.CLIP_SCORE] == Value(
        "float32"
    )

    rows = _rows(output).to_pylist()
    threshold = sorted(row[S.CLIP_SCORE] for row in rows)[len(rows) // 3]
    wanted = {"goldfish", "tabby cat"}
    expected: dict[str, list[str]] = {}
    # shards in order, rows in order: the first 2 per label
    for path in sorted((output / "data").rglob("*.parquet")):
        for row in pq.read_table(path, columns=[S.KEY, S.LABEL, S.CLIP_SCORE]).to_pylist():
            label = names[row[S.LABEL]]
            if row[S.CLIP_SCORE] >= threshold and label in wanted and len(expected.setdefault(label, [])) < 2:
                expected[label].append(row[S.KEY])
    before = {str(p): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    target = tmp_path / "export"
    where = f"clip_score >= {threshold!r} and label in ['goldfish', 'tabby cat']"
    assert main(["export", str(output), "--where", where, "--to", str(target), "--per-label", "2"]) == 0, (
        capsys.readouterr()
    )
    assert {
        str(p): p.read_bytes() for p in output.rglob("*") if p.is_file()
    } == before  # the source is only read
    exported = load_dataset(str(target), split="train", cache_dir=str(tmp_path / "hf")).remove_columns(
        "image"
    )
    assert exported.features[S.LABEL] == ClassLabel(names=names)
    got: dict[str, list[str]] = {}
    for row in exported:
        got.setdefault(names[row[S.LABEL]], []).append(row[S.KEY])
        assert row[S.CLIP_SCORE] >= threshold
    assert {label: sorted(keys) for label, keys in got.items()} == {
        label: sorted(keys) for label, keys in expected.items()
    }
    assert main(["verify", str(target)]) == 0
