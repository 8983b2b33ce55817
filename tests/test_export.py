"""``pixart-batch export``: exactly the rows an expression selects (balanced per label when asked), in
either format, loadable with ``datasets``, the source left byte-identical; bad expressions and
destinations refused in one line with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pixart_batch import schema as S
from pixart_batch.errors import ExpressionError
from pixart_batch.expr import BOOL, LABEL, NUMBER, STRING, Column, parse_where

NAMES = ["bird", "cat", "dog"]
PROMPTS = [
    "a red fox",
    "a blue house --ar 1:2",
    "a cat on a sofa",
    "a dog in the snow",
    "a bird on a wire",
    "a green field --ar 2:1",
    "a lighthouse at night",
    "a bowl of fruit",
    "a mountain lake",
    "a city street in rain",
]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from pixart_batch.cli import main

    capsys.readouterr()
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def load(path: Path):
    from datasets import load_dataset

    return load_dataset(str(path), split="train")


def shard_rows(output: Path, columns: list[str]) -> list[dict]:
    """Every row of an output's Parquet shards (sorted shard order), ``columns`` only."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted((output / "data").rglob("*.parquet")):
        rows += pq.read_table(path, columns=columns).to_pylist()
    return rows


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model):
    """A real output (local executor) of 10 prompts, and a copy whose shards carry a ``label``
    ClassLabel (bird, cat, dog) and a ``clip_score`` column, its settings the class names."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import ClassLabel, Features, Value
    from helpers import tiny_config

    from pixart_batch.run import run_generate

    root = tmp_path_factory.mktemp("export")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    plain = root / "plain"
    run_generate(tiny_config(), str(prompts), str(plain))
    labelled = root / "labelled"
    shutil.copytree(plain, labelled)
    index = 0
    for path in sorted((labelled / "data").rglob("*.parquet")):
        table = pq.read_table(path)
        labels = [(index + i) % 3 for i in range(table.num_rows)]
        scores = [20.0 + ((index + i) * 7) % 15 for i in range(table.num_rows)]
        index += table.num_rows
        features = Features({**Features.from_arrow_schema(table.schema), S.LABEL: ClassLabel(names=NAMES)})
        features[S.CLIP_SCORE] = Value("float32")
        image = features.pop(S.IMAGE)
        features[S.IMAGE] = image
        table = table.append_column(S.LABEL, pa.array(labels, pa.int64()))
        table = table.append_column(S.CLIP_SCORE, pa.array(scores, pa.float32())).select(list(features))
        schema = features.arrow_schema
        metadata = {**schema.metadata, S.SHARD_SETTINGS_KEY: table.schema.metadata[S.SHARD_SETTINGS_KEY]}
        pq.write_table(table.cast(schema.with_metadata(metadata)), path, row_group_size=4)
    settings = json.loads((labelled / "settings.json").read_text())
    (labelled / "settings.json").write_text(json.dumps({**settings, "output.label_names": NAMES}, indent=2))
    return root, plain, labelled


# --- the expression language (no output needed) --------------------------------------------------

COLUMNS = {
    "seed": Column("seed", NUMBER),
    "clip_score": Column("clip_score", NUMBER),
    "prompt": Column("prompt", STRING),
    "truncated": Column("truncated", BOOL),
    "label": Column("label", LABEL, tuple(NAMES)),
}


def matches(text: str, row: dict) -> bool:
    return parse_where(text, COLUMNS).matches(row)


def test_expressions_evaluate_without_eval():
    row = {"seed": 7, "clip_score": 28.5, "prompt": "a cat", "truncated": False, "label": 1}
    assert matches("clip_score >= 28 and label in ['cat', 'dog']", row)
    assert matches("28 <= clip_score", row) and not matches("28 > clip_score", row)
    assert matches('seed == 7 and prompt == "a cat"', row)
    assert matches("not truncated and truncated == false", row)
    assert matches("label == 'cat' and label != 'dog' and label not in ['bird']", row)
    assert matches("seed > -1 and (seed < 3 or prompt in ['a cat', 'x'])", row)
    assert not matches("seed in [1, 2, 3]", row)
    assert not matches("seed > 3 and seed < 5", row)
    null = {"seed": None, "prompt": None}
    assert not matches("seed >= 0", null) and not matches("seed < 0", null) and matches("not seed >= 0", null)
    assert parse_where("clip_score >= 28 and label == 'dog'", COLUMNS).columns == {"clip_score", "label"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("clip_scor >= 28", "unknown column 'clip_scor' (did you mean clip_score?"),
        ("colour == 'red'", "unknown column 'colour' (columns: clip_score, label, prompt"),
        ("prompt >= 28", "column 'prompt' is a string; cannot compare it with the number 28"),
        ("seed == 'seven'", "column 'seed' is a number; cannot compare it with the string 'seven'"),
        ("seed == true", "column 'seed' is a number; cannot compare it with the bool true"),
        ("truncated > false", "column 'truncated' is a bool; use == or !="),
        ("label == 'cow'", "'cow' is not a class of column 'label' (classes: bird, cat, dog)"),
        ("label == 1", "compared by class name"),
        ("label < 'cat'", "is a class label; use ==, !=, in or not in"),
        ("seed >= 0 and", "syntax error at position"),
        ("seed = 3", "syntax error at position"),
        ("seed >= 0 && seed < 3", "syntax error at position"),
        ("__import__('os').system('true')", "unsupported call at position 1"),
        ("seed.real > 0", "unsupported attribute at position 1"),
        ("seed > seed", "comparison of two columns"),
        ("1 < seed < 3", "chained comparison"),
        ("seed + 1 > 2", "unsupported arithmetic"),
        ("seed in 'abc'", "needs a list of literals"),
        ("seed", "column 'seed' is a number, not a bool"),
        ("seed == None", "expected a literal"),
        ("", "empty expression"),
        ("seed > 1\x00", "--where: "),
        ("seed > 1\nor seed < 0", "one line"),
        ("(" * 300 + "seed > 1" + ")" * 300, "syntax error at position"),
        ("not " * 2400 + "truncated", "--where: "),
        ("seed > 1 or " * 1000 + "seed < 0", "characters (at most 10000)"),
    ],
)
def test_bad_expressions_are_one_line_errors(text, needle):
    with pytest.raises(ExpressionError) as caught:
        parse_where(text, COLUMNS)
    message = str(caught.value)
    assert needle in message and "\n" not in message, message


# --- whole exports -------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_has_exactly_the_rows_that_satisfy_the_expression(made, capsys):
    root, _, labelled = made
    before = snapshot(labelled)
    where = "clip_score >= 28 and label in ['cat', 'dog']"
    code, out, err = cli(capsys, str(labelled), "--where", where, "--to", str(root / "ex-parquet"))
    assert code == 0, err
    rows = shard_rows(labelled, [S.KEY, S.LABEL, S.CLIP_SCORE])
    expected = [r[S.KEY] for r in rows if r[S.CLIP_SCORE] >= 28 and NAMES[r[S.LABEL]] in ("cat", "dog")]
    assert 0 < len(expected) < len(rows)
    assert f"export: {len(expected)} of {len(rows)} rows exported" in out
    dataset = load(root / "ex-parquet")
    assert dataset[S.KEY] == expected
    assert dataset.features[S.LABEL].names == NAMES
    assert all(score >= 28 for score in dataset[S.CLIP_SCORE])
    source = {r[S.KEY]: r for r in shard_rows(labelled, [S.KEY, S.IMAGE, S.SHA256])}
    copied = shard_rows(root / "ex-parquet", [S.KEY, S.IMAGE])
    assert all(r[S.IMAGE]["bytes"] == source[r[S.KEY]][S.IMAGE]["bytes"] for r in copied)  # never re-encoded
    assert snapshot(labelled) == before
    settings = json.loads((root / "ex-parquet" / "settings.json").read_text())
    assert settings["export"] == {"source": str(labelled), "where": where, "per_label": None}
    from pixart_batch.audit import status, verify

    assert verify(str(root / "ex-parquet")).ok
    assert status(str(root / "ex-parquet"))["total"]["done"] == len(expected)


@pytest.mark.slow
def test_per_label_keeps_the_first_n_of_each_class(made, capsys):
    root, _, labelled = made
    before = snapshot(labelled)
    code, out, err = cli(
        capsys, str(labelled), "--where", "seed >= 0", "--to", str(root / "balanced"), "--per-label", "2"
    )
    assert code == 0, err
    rows = shard_rows(labelled, [S.KEY, S.LABEL])
    expected, kept = [], {0: 0, 1: 0, 2: 0}
    for row in rows:
        if kept[row[S.LABEL]] < 2:
            kept[row[S.LABEL]] += 1
            expected.append(row[S.KEY])
    dataset = load(root / "balanced")
    assert dataset[S.KEY] == expected
    assert sorted(dataset[S.LABEL]) == [0, 0, 1, 1, 2, 2]
    assert "6 of 10 rows exported" in out and "(bird: 2, cat: 2, dog: 2)" in out
    assert snapshot(labelled) == before


@pytest.mark.slow
def test_webdataset_export_loads_and_exports_again(made, capsys):
    root, _, labelled = made
    tars = root / "ex-tars"
    code, out, err = cli(
        capsys, str(labelled), "--where", "label != 'bird'", "--to", str(tars), "--format", "webdataset"
    )
    assert code == 0, err
    expected = [r[S.KEY] for r in shard_rows(labelled, [S.KEY, S.LABEL]) if r[S.LABEL] != 0]
    dataset = load(tars)
    assert dataset["__key__"] == expected
    assert [NAMES[row[S.LABEL]] for row in dataset["json"]] != [] and all(
        row[S.LABEL] != 0 for row in dataset["json"]
    )
    from pixart_batch.audit import verify

    assert verify(str(tars)).ok
    # A WebDataset source: its labels by name again (settings.json), back to Parquet.
    code, out, err = cli(
        capsys, str(tars), "--where", "label == 'dog'", "--to", str(root / "back"), "--format", "parquet"
    )
    assert code == 0, err
    back = load(root / "back")
    assert back[S.KEY] == [
        key for key, row in zip(dataset["__key__"], dataset["json"], strict=True) if row[S.LABEL] == 2
    ]
    assert back.features[S.LABEL].names == NAMES


@pytest.mark.slow
def test_an_unlabelled_output_exports_and_refuses_per_label(made, capsys):
    root, plain, _ = made
    code, out, err = cli(
        capsys, str(plain), "--where", "bucket_width > bucket_height or seed < 0", "--to", str(root / "x")
    )
    assert code == 2 and "comparison of two columns" in err and not (root / "x").exists()
    code, out, err = cli(capsys, str(plain), "--where", "bucket_width >= 300", "--to", str(root / "wide"))
    assert code == 0, err
    wide = [r[S.KEY] for r in shard_rows(plain, [S.KEY, S.BUCKET_WIDTH]) if r[S.BUCKET_WIDTH] >= 300]
    assert load(root / "wide")[S.KEY] == wide and wide
    code, out, err = cli(
        capsys, str(plain), "--where", "seed >= 0", "--to", str(root / "y"), "--per-label", "1"
    )
    assert code == 2 and "--per-label needs a 'label' column" in err and not (root / "y").exists()


@pytest.mark.slow
def test_refusals_are_one_line_and_write_nothing(made, capsys, tmp_path):
    root, plain, labelled = made
    before = snapshot(labelled)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (
            [str(labelled), "--where", "clip_scor > 1", "--to", str(tmp_path / "a")],
            "unknown column 'clip_scor'",
        ),
        (
            [str(labelled), "--where", "prompt > 3", "--to", str(tmp_path / "a")],
            "column 'prompt' is a string",
        ),
        ([str(labelled), "--where", "seed >>", "--to", str(tmp_path / "a")], "syntax error at position"),
        ([str(labelled), "--where", "seed < 0", "--to", str(tmp_path / "a")], "no row satisfies"),
        (
            [str(labelled), "--where", "seed >= 0", "--to", str(tmp_path / "a"), "--per-label", "0"],
            "at least 1",
        ),
        (
            [str(labelled), "--where", "seed >= 0", "--to", str(foreign)],
            "is not empty and was not written by pixart-batch",
        ),
        ([str(labelled), "--where", "seed >= 0", "--to", str(plain)], "is a pixart-batch output already"),
        (
            [str(labelled), "--where", "seed >= 0", "--to", str(labelled / "exports" / "a")],
            "lies inside the source output",
        ),
        (
            [str(labelled), "--where", "seed >= 0", "--to", str(plain / "data" / "a")],
            "which the pixart-batch output",
        ),
        ([str(foreign), "--where", "seed >= 0", "--to", str(tmp_path / "a")], "not a pixart-batch output"),
    ]
    for args, needle in cases:
        code, out, err = cli(capsys, *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
        assert (
            not (tmp_path / "a").exists()
            and not (labelled / "exports").exists()
            and not (plain / "data" / "a").exists()
        )
    assert snapshot(labelled) == before
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    code, out, err = cli(capsys, str(labelled), "--where", "seed >= 0", "--to", str(empty))
    assert code == 0, err  # an empty folder is fine


@pytest.mark.slow
def test_a_damaged_source_shard_is_named_and_nothing_is_written(made, capsys, tmp_path):
    _, _, labelled = made
    damaged = tmp_path / "damaged"
    shutil.copytree(labelled, damaged)
    shard = sorted((damaged / "data").rglob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    before = snapshot(damaged)
    code, out, err = cli(capsys, str(damaged), "--where", "seed >= 0", "--to", str(tmp_path / "out"))
    assert code == 2 and f"{shard}: damaged shard" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() and snapshot(damaged) == before


@pytest.mark.slow
def test_a_failure_while_copying_removes_what_the_export_wrote(made, capsys, tmp_path, monkeypatch):
    from pixart_batch.output.formats import ParquetFormat

    _, _, labelled = made
    before = snapshot(labelled)
    original = ParquetFormat.rows_of_groups

    def breaks(self, path, groups, columns):
        rows = original(self, path, groups, columns)
        yield next(rows)
        raise OSError("connection reset while reading")

    monkeypatch.setattr(ParquetFormat, "rows_of_groups", breaks)
    code, out, err = cli(capsys, str(labelled), "--where", "seed >= 0", "--to", str(tmp_path / "new"))
    assert code == 2 and "unreadable shard (OSError: connection reset while reading)" in err, err
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, str(labelled), "--where", "seed >= 0", "--to", str(tmp_path / "empty"))
    assert code == 2 and [p.name for p in (tmp_path / "empty").iterdir()] in ([], [".pixart-batch.lock"])
    assert snapshot(labelled) == before
    monkeypatch.undo()
    code, out, err = cli(capsys, str(labelled), "--where", "seed >= 0", "--to", str(tmp_path / "empty"))
    assert code == 0, err  # what a failed export leaves is no obstacle to the next


@pytest.mark.slow
def test_a_shard_without_a_later_column_reads_it_as_missing(made, capsys, tmp_path):
    import pyarrow.parquet as pq

    _, _, labelled = made
    older = tmp_path / "older"
    shutil.copytree(labelled, older)
    shard = sorted((older / "data").rglob("*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table.drop_columns([S.FAST_MODE]), shard)  # as shards written before fast_mode existed
    code, out, err = cli(
        capsys, str(older), "--where", "fast_mode == 'exact' or seed >= 0", "--to", str(tmp_path / "x")
    )
    assert code == 0, err
    dataset = load(tmp_path / "x")
    assert dataset.num_rows == table.num_rows and set(dataset[S.FAST_MODE]) == {None}
