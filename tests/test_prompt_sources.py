"""Prompt sources beyond one file: a ``datasets`` ``save_to_disk`` folder, folders and globs of tables,
hub datasets (``hf://datasets/...``: the offline error here, the online reading through a fake fsspec
file system), and the column flags (``--prompt-column``, ``--id-column``, ``--label-column``,
``--negative-prompt-column``) of every table source."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_bad_input import refused

from pixart_batch import schema as S
from pixart_batch.cli import main
from pixart_batch.errors import PromptFileError
from pixart_batch.prompts import PromptSource, iter_prompts, read_prompts, scan_prompts

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
CAPTIONS = ["a red fox in the snow", "a lighthouse at dusk", "a red fox in the snow", "a bowl of ramen"]
LABELS = ["fox", "sea", "fox", "food"]


def save_dataset(path: Path, columns: dict, features=None) -> Path:
    """A ``Dataset.save_to_disk`` folder with ``columns`` (progress bars off)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(path))
    return path


def ids(source) -> list[str]:
    return [record.prompt_id for record in read_prompts(source)]


def generate(source: Path | str, output: Path, *flags: str) -> dict:
    """``pixart-batch generate`` in this process (local executor, 2 steps); the run report."""
    assert main([*run_args(source, output), "--steps", "2", *flags]) == 0
    return json.loads((output / "run_report.json").read_text())


def rows(output: Path) -> list[dict]:
    shards = sorted((output / "data").rglob("*.parquet"))
    tables = [pq.read_table(p, columns=[S.KEY, "prompt", "prompt_id"]) for p in shards]
    return sorted(pa.concat_tables(tables).to_pylist(), key=lambda row: row[S.KEY])


# --------------------------------------------------------------------------- generate through the flags


def test_datasets_folder_with_caption_and_label_generates_a_labelled_output(tmp_path):
    columns = {"caption": CAPTIONS, "label": LABELS, "extra": [1, 2, 3, 4]}
    folder = save_dataset(tmp_path / "captions", columns)
    output = tmp_path / "out"
    first = generate(folder, output, "--prompt-column", "caption")
    assert first["images_generated"] == 4 and first["labels"] == {"food": 1, "fox": 2, "sea": 1}
    assert json.loads((output / "settings.json").read_text())[S.LABEL_NAMES_SETTING] == ["food", "fox", "sea"]
    renamed = tmp_path / "renamed.parquet"
    pq.write_table(pa.table({"prompt": CAPTIONS, "label": LABELS}), renamed)
    assert sorted({row["prompt_id"] for row in rows(output)}) == sorted(set(ids(renamed)))
    before = rows(output)
    again = generate(folder, output, "--prompt-column", "caption")
    assert (again["images_generated"], again["images_skipped"]) == (0, 4)
    assert rows(output) == before


def test_parquet_text_column_generates_an_unlabelled_output(tmp_path):
    source = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"text": CAPTIONS[:3], "url": ["u1", "u2", "u3"]}), source)
    output = tmp_path / "out"
    first = generate(source, output, "--prompt-column", "text")
    assert first["images_generated"] == 3 and not first.get("labels")
    assert S.LABEL_NAMES_SETTING not in json.loads((output / "settings.json").read_text())
    again = generate(source, output, "--prompt-column", "text")
    assert (again["images_generated"], again["images_skipped"]) == (0, 3)
    assert [row["prompt"] for row in rows(output)] and {r["prompt_id"] for r in rows(output)} == set(
        ids(PromptSource(str(source), prompt_column="text"))
    )


def test_plan_reads_through_the_column_flags(tmp_path, capsys):
    folder = save_dataset(tmp_path / "captions", {"caption": CAPTIONS, "label": LABELS})
    capsys.readouterr()
    assert main(["plan", str(folder), "--config", TINY, "--prompt-column", "caption", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prompts"] == 4 and data["images_per_label"] == {"fox": 2, "sea": 1, "food": 1}


# --------------------------------------------------------------------------- ids and columns


def test_mapped_columns_give_the_ids_of_renamed_columns(tmp_path):
    texts = ["a cat --ar 1:2", "a dog", "a cat --ar 1:2", "a cow"]
    negatives = [None, "blurry", None, ""]
    given = {"caption": texts, "cls": ["c", "d", "c", "w"], "neg": negatives}
    plain = {"prompt": texts, "label": ["c", "d", "c", "w"], "negative_prompt": negatives}
    flags = {"prompt_column": "caption", "label_column": "cls", "negative_prompt_column": "neg"}
    pq.write_table(pa.table(plain), tmp_path / "plain.parquet")
    expected = read_prompts(tmp_path / "plain.parquet")
    assert [r.prompt_id for r in expected][2].endswith("-1")  # the repeated row numbered as in one file

    pq.write_table(pa.table(given), tmp_path / "mapped.parquet")
    objects = [dict(zip(given, row, strict=True)) for row in zip(*given.values(), strict=True)]
    (tmp_path / "mapped.jsonl").write_text("".join(json.dumps(obj) + "\n" for obj in objects))
    csv_rows = ["caption,cls,neg"] + [f"{o['caption']},{o['cls']},{o['neg'] or ''}" for o in objects]
    (tmp_path / "mapped.csv").write_text("\n".join(csv_rows) + "\n")
    save_dataset(tmp_path / "mapped-ds", given)
    for name in ("mapped.parquet", "mapped.jsonl", "mapped-ds"):
        got = read_prompts(PromptSource(str(tmp_path / name), **flags))
        assert [(r.prompt_id, r.prompt, r.label, r.negative_prompt, r.aspect_ratio) for r in got] == [
            (r.prompt_id, r.prompt, r.label, r.negative_prompt, r.aspect_ratio) for r in expected
        ], name
    csv = read_prompts(PromptSource(str(tmp_path / "mapped.csv"), **flags))  # an empty cell: "not given"
    assert [r.prompt_id for r in csv][:3] == [r.prompt_id for r in expected][:3]


def test_id_column_and_class_label_column(tmp_path):
    import datasets

    kind = datasets.ClassLabel(names=["cat", "dog"])
    text, uid = datasets.Value("string"), datasets.Value("int64")
    features = datasets.Features({"text": text, "uid": uid, "kind": kind})
    columns = {"text": ["a", "b", "c"], "uid": [7, 8, 9], "kind": [1, 0, 1]}
    folder = save_dataset(tmp_path / "ds", columns, features)
    flags = {"prompt_column": "text", "id_column": "uid", "label_column": "kind"}
    records = read_prompts(PromptSource(str(folder), **flags))
    assert [(r.prompt_id, r.label, r.source) for r in records] == [
        ("7", "dog", f"{folder}:row 1"),
        ("8", "cat", f"{folder}:row 2"),
        ("9", "dog", f"{folder}:row 3"),
    ]
    save_dataset(tmp_path / "dup", {"text": ["a", "b"], "uid": [7, 7]})
    with pytest.raises(PromptFileError, match=r"dup:row 2: duplicate id '7' \(first at row 1\)$"):
        read_prompts(PromptSource(str(tmp_path / "dup"), prompt_column="text", id_column="uid"))


def test_a_dataset_of_several_arrow_files_streams_in_order_and_is_fingerprinted(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    texts = [f"prompt number {i}" for i in range(30)]
    datasets.Dataset.from_dict({"caption": texts}).save_to_disk(str(tmp_path / "ds"), num_shards=3)
    assert len(list((tmp_path / "ds").glob("*.arrow"))) == 3
    source = PromptSource(str(tmp_path / "ds"), prompt_column="caption")
    scan = scan_prompts(source)
    assert scan.count == 30 and scan.fingerprint is not None and len(scan.fingerprint.parts) == 3
    assert [r.prompt for r in iter_prompts(str(tmp_path / "ds"), scan)] == texts  # the scan's columns
    assert [r.source for r in iter_prompts(source, scan)][-1] == f"{tmp_path / 'ds'}:row 30"
    datasets.Dataset.from_dict({"caption": texts[::-1]}).save_to_disk(str(tmp_path / "ds2"), num_shards=3)
    for arrow in sorted((tmp_path / "ds2").glob("*.arrow")):
        (tmp_path / "ds" / arrow.name).write_bytes(arrow.read_bytes())
    with pytest.raises(PromptFileError, match="changed while the run was starting"):
        list(iter_prompts(source, scan))


def test_folders_and_globs_of_tables(tmp_path, monkeypatch):
    data = tmp_path / "snapshot" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["a", "b"]}), data / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": ["c"]}), data / "train-00001-of-00002.parquet")
    (tmp_path / "snapshot" / "README.md").write_text("# card")
    (tmp_path / "snapshot" / ".cache").mkdir()
    (tmp_path / "snapshot" / ".cache" / "x.parquet").write_bytes(b"not read")
    folder = read_prompts(PromptSource(str(tmp_path / "snapshot"), prompt_column="text"))
    assert [r.prompt for r in folder] == ["a", "b", "c"]
    assert folder[2].source == f"{tmp_path / 'snapshot'}/data/train-00001-of-00002.parquet:row 1"
    glob = read_prompts(PromptSource(str(data / "train-*.parquet"), prompt_column="text"))
    assert [r.prompt_id for r in glob] == [r.prompt_id for r in folder]
    monkeypatch.chdir(data)
    here = read_prompts(PromptSource("train-*.parquet", prompt_column="text"))
    assert [r.source for r in here][-1] == "train-00001-of-00002.parquet:row 1"
    pq.write_table(pa.table({"text": ["z"]}), data / "test-00000-of-00001.parquet")
    with pytest.raises(PromptFileError) as info:
        read_prompts(PromptSource(str(tmp_path / "snapshot"), prompt_column="text"))
    assert str(info.value) == (
        f"{tmp_path / 'snapshot'}: holds the splits train, test; pass one of them, e.g. --prompts "
        f"{tmp_path / 'snapshot'}/data/train*.parquet"
    )


# --------------------------------------------------------------------------- refusals: one line, exit 2


@pytest.fixture
def output(tmp_path):
    """An existing output that every refused run must leave as it is."""
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("card")
    return out


def run_args(source: str | Path, output: Path, *flags: str) -> list[str]:
    paths = ["--prompts", str(source), "--output", str(output)]
    return ["generate", "--config", TINY, *paths, "--executor", "local", *flags]


def test_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, output):
    many = {f"column_{i:02d}": ["x"] for i in range(25)}
    pq.write_table(pa.table({"text": ["a"], **many}), tmp_path / "wide.parquet")
    save_dataset(tmp_path / "ds", {"caption": ["a", "b"], "label": ["x", "y"]})
    (tmp_path / "p.txt").write_text("a cat\n")
    (tmp_path / "c.jsonl").write_text('{"caption": "a cat"}\n')
    ds, wide, jsonl = tmp_path / "ds", tmp_path / "wide.parquet", tmp_path / "c.jsonl"
    caption, label = ["--prompt-column", "caption"], ["--label-column", "cls"]
    cases = [
        (ds, [], ["ds: no 'prompt' column (columns: caption, label)", "pass --prompt-column caption"]),
        (ds, ["--prompt-column", "text"], ["no column 'text' (--prompt-column); columns: caption, label"]),
        (ds, [*caption, "--id-column", "uid"], ["no column 'uid' (--id-column)"]),
        (wide, [], ["pass --prompt-column text", "column_18, ... (6 more)"]),
        (wide, ["--prompt-column", "text", *label], ["no column 'cls' (--label-column)"]),
        (jsonl, [], ["c.jsonl:1: 'prompt' is missing or null", "pass --prompt-column caption"]),
        (jsonl, [*caption, "--negative-prompt-column", "neg"], ["no key 'neg'"]),
        (tmp_path / "p.txt", caption, ["--prompt-column applies to tables", "not a .txt file"]),
        (ds, ["--prompt-column", "label"], ["--prompt-column and --label-column both name the column"]),
        (tmp_path / "nope", [], ["nope: no such file or folder"]),
        ("hf://org/name", [], ["prompts are read from dataset repositories of the Hub: hf://datasets/"]),
    ]
    for source, flags, needles in cases:
        refused(capsys, run_args(source, output, *flags), output, *needles)
    # plan refuses the same way
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "ds"), "--config", TINY, "--id-column", "uid"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no 'prompt' column" in err


def test_a_dataset_dict_is_refused_naming_its_splits(tmp_path, capsys, output):
    import datasets

    datasets.disable_progress_bars()
    split = datasets.Dataset.from_dict({"caption": ["a"]})
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    refused(
        capsys,
        run_args(tmp_path / "dd", output, "--prompt-column", "caption"),
        output,
        f"{tmp_path / 'dd'}: is a DatasetDict with the splits train, test; pass the folder of one, "
        f"e.g. --prompts {tmp_path / 'dd' / 'train'}",
    )


def test_an_output_inside_the_prompt_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "tables"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["a"]}), folder / "p.parquet")
    output = folder / "out"
    output.mkdir()
    refused(capsys, run_args(folder, output), output, "the output lies inside the prompt folder")


# --------------------------------------------------------------------------- the hub


def test_hub_offline_names_the_cached_copy_or_how_to_download(tmp_path, capsys, output, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    err = refused(capsys, run_args("hf://datasets/org/name/data", output, "--prompt-column", "text"), output)
    assert err.strip().endswith(
        "hf://datasets/org/name/data: the Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set) and no "
        "copy is cached here; where it can, run `hf download --repo-type dataset org/name --local-dir DIR` "
        "and pass --prompts DIR/data"
    )
    repo = tmp_path / "hub-cache" / "datasets--org--name"
    snapshot = repo / "snapshots" / ("a" * 40)
    (snapshot / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["a cat", "a dog"]}), snapshot / "data" / "train-00000-of-00001.parquet")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    refused(
        capsys,
        run_args("hf://datasets/org/name/data", output, "--prompt-column", "text"),
        output,
        f"a copy is cached here: pass --prompts {snapshot / 'data'}",
    )
    cached = read_prompts(PromptSource(str(snapshot / "data"), prompt_column="text"))
    assert [r.prompt for r in cached] == ["a cat", "a dog"]


@pytest.fixture
def fake_hub(monkeypatch):
    """The hub as an in-memory fsspec file system: ``(file system, "datasets/org/<unique>")``."""
    import fsspec  # type: ignore[import-untyped]

    from pixart_batch.prompts import hub

    memory = fsspec.filesystem("memory")
    root = f"datasets/org/{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(hub, "filesystem", lambda: memory)
    monkeypatch.setattr(hub, "offline", lambda: False)
    yield memory, root
    memory.rm("/" + root, recursive=True)


def put_parquet(memory, path: str, table: pa.Table) -> None:
    with memory.open(path, "wb") as handle:
        pq.write_table(table, handle)


def test_hub_dataset_read_through_its_file_system(tmp_path, fake_hub):
    memory, root = fake_hub
    for index, part in enumerate((slice(0, 2), slice(2, 4))):
        table = pa.table({"caption": CAPTIONS[part], "label": LABELS[part]})
        put_parquet(memory, f"{root}/data/train-0000{index}-of-00002.parquet", table)
    memory.pipe(f"{root}/README.md", b"---\nlicense: mit\n---\n")
    memory.pipe(f"{root}/captions.jsonl", b'{"caption": "a lighthouse at dusk"}\n')
    local = tmp_path / "renamed.parquet"
    pq.write_table(pa.table({"prompt": CAPTIONS, "label": LABELS}), local)
    for path in (f"hf://{root}/data", f"hf://{root}/data/train-*.parquet"):
        source = PromptSource(path, prompt_column="caption")
        scan = scan_prompts(source)
        assert scan.count == 4 and scan.labels == ("food", "fox", "sea")
        assert [r.prompt_id for r in iter_prompts(path, scan)] == ids(local)
    one = read_prompts(PromptSource(f"hf://{root}/captions.jsonl", prompt_column="caption"))
    assert [(r.prompt, r.source) for r in one] == [("a lighthouse at dusk", f"hf://{root}/captions.jsonl:1")]
    with pytest.raises(PromptFileError, match=r"not found on the Hugging Face Hub"):
        read_prompts(f"hf://{root}/missing.parquet")


def test_hub_save_to_disk_folder_and_unreachable_hub(tmp_path, fake_hub, monkeypatch):
    memory, root = fake_hub
    folder = save_dataset(tmp_path / "ds", {"caption": CAPTIONS, "label": LABELS})
    for file in folder.iterdir():
        memory.pipe(f"{root}/{file.name}", file.read_bytes())
    got = read_prompts(PromptSource(f"hf://{root}", prompt_column="caption"))
    assert [(r.prompt_id, r.label) for r in got] == [
        (r.prompt_id, r.label) for r in read_prompts(PromptSource(str(folder), prompt_column="caption"))
    ]
    assert got[0].source == f"hf://{root}:row 1"

    class Down:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise ConnectionError("Name or service not known")

            return fail

    from pixart_batch.prompts import hub

    monkeypatch.setattr(hub, "filesystem", lambda: Down())
    with pytest.raises(PromptFileError) as info:
        read_prompts(f"hf://{root}/data/x.parquet")
    message = str(info.value)
    reached = "the Hugging Face Hub cannot be reached (ConnectionError: "
    assert message.startswith(f"hf://{root}/data/x.parquet: {reached}")
    assert "hf download --repo-type dataset" in message and message.count("\n") == 0


# --------------------------------------------------------------------------- light imports


def test_help_shows_the_column_flags_and_imports_nothing_heavy():
    code = (
        "import sys, contextlib, io\n"
        "from pixart_batch.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['generate', '--help'])\n"
        "import pixart_batch.prompts\n"
        "heavy = [m for m in ('datasets', 'torch', 'ray', 'huggingface_hub', 'fsspec') if m in sys.modules]\n"
        "print(heavy, '--prompt-column' in out.getvalue() and '--negative-prompt-column' in out.getvalue())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] True"
