"""Labels: the ``label`` field of prompt files, class × template files, and the labelled output
(``ClassLabel`` rows in both formats and both executors, names appended on a re-run, counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_config

from pixart_batch import schema as S
from pixart_batch.errors import OutputError, PromptFileError
from pixart_batch.output.guard import changed_setting
from pixart_batch.prompts import read_prompts, scan_prompts

EXAMPLE = Path(__file__).parent.parent / "examples" / "classes-10.yaml"


def _yaml(tmp_path: Path, text: str, name: str = "classes.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = """\
classes:
  tabby cat: [tabby cat, tabby]
  goldfish:
templates: ["a photo of a {}", "a drawing of a {}"]
"""


# --------------------------------------------------------------------------- class × template expansion


def test_expansion_records_labels_and_templates(tmp_path):
    records = read_prompts(_yaml(tmp_path, BASE))
    assert [(r.label, r.template, r.prompt) for r in records] == [
        ("tabby cat", 0, "a photo of a tabby cat"),
        ("tabby cat", 0, "a photo of a tabby"),
        ("tabby cat", 1, "a drawing of a tabby cat"),
        ("tabby cat", 1, "a drawing of a tabby"),
        ("goldfish", 0, "a photo of a goldfish"),
        ("goldfish", 1, "a drawing of a goldfish"),
    ]
    assert all(r.prompt_id.startswith("c") and len(r.prompt_id) == 17 for r in records)
    assert scan_prompts(tmp_path / "classes.yaml").labels == ("goldfish", "tabby cat")


def test_expansion_ids_are_stable_when_classes_synonyms_and_templates_are_added(tmp_path):
    before = {r.prompt_id: r for r in read_prompts(_yaml(tmp_path, BASE, "a.yaml"))}
    grown = """\
classes:
  axolotl: an axolotl
  tabby cat: [tabby, tabby cat, striped cat]
  goldfish:
  zebra:
templates: ["a sketch of a {}", "a photo of a {}", "a drawing of a {}"]
"""
    after = {r.prompt_id: r for r in read_prompts(_yaml(tmp_path, grown, "b.yaml"))}
    assert set(before) < set(after)
    for prompt_id, record in before.items():
        assert (after[prompt_id].prompt, after[prompt_id].label) == (record.prompt, record.label)


def test_images_per_class_round_robin_and_ratios_stable(tmp_path):
    text = BASE + 'images_per_class: 5\naspect_ratios: ["1:1", "3:4"]\nnegative_prompt: " blurry "\n'
    records = read_prompts(_yaml(tmp_path, text))
    cats = [r for r in records if r.label == "tabby cat"]
    fish = [r for r in records if r.label == "goldfish"]
    assert len(cats) == len(fish) == 5
    # 4 combinations for the cat: the 5th record repeats the first with another id (its repeat index)
    assert cats[4].prompt == cats[0].prompt and cats[4].prompt_id != cats[0].prompt_id
    assert [r.prompt for r in fish] == ["a photo of a goldfish", "a drawing of a goldfish"] * 2 + [
        "a photo of a goldfish"
    ]
    assert {r.aspect_ratio for r in records} <= {1.0, 0.75} and {r.negative_prompt for r in records} == {
        "blurry"
    }
    again = read_prompts(_yaml(tmp_path, text.replace("goldfish:", "goldfish:\n  zebra:"), "more.yaml"))
    kept = {r.prompt_id: r.aspect_ratio for r in again}
    assert all(kept[r.prompt_id] == r.aspect_ratio for r in records)


def test_example_recipe_has_ten_classes():
    scan = scan_prompts(EXAMPLE)
    assert len(scan.labels) == 10 and scan.count >= 10 * 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "classes: {cat: }\ntemplates: [a photo of a cat]\n",
            ":2: template 'a photo of a cat' must hold exactly one {}",
        ),
        ("classes: {cat: }\ntemplates: ['a {} and a {}']\n", "must hold exactly one {}"),
        ("classes: {cat: }\ntemplates: ['a {0}']\n", "must hold exactly one {}"),
        ("classes: {}\ntemplates: ['a {}']\n", ":1: 'classes' must be a non-empty mapping"),
        ("templates: ['a {}']\n", "'classes' must be a non-empty mapping"),
        ("classes:\n  cat:\n  12:\ntemplates: ['a {}']\n", ":3: class names must be strings, not int"),
        (
            "classes: {cat: }\ntemplates: ['a {}']\nimages_per_class: 0\n",
            ":3: 'images_per_class' must be an integer",
        ),
        (
            "classes: {cat: }\ntemplates: ['a {}']\nimages_per_class: true\n",
            "'images_per_class' must be an integer",
        ),
        ("classes: {cat: }\ntemplates: ['a {}']\ncolours: [red]\n", ":3: unknown key 'colours'"),
        (
            "classes:\n  cat:\n  cat: kitty\ntemplates: ['a {}']\n",
            ":3: duplicate key 'cat' (first on line 2)",
        ),
        ("classes: {cat: [kitty, kitty]}\ntemplates: ['a {}']\n", "'kitty' is given twice"),
        ("classes: {cat: [3]}\ntemplates: ['a {}']\n", "must be non-empty strings (got int)"),
        ("classes: {cat: }\ntemplates: ['a {}']\naspect_ratios: ['wide']\n", "'aspect_ratios'"),
        (
            "classes: {cat: }\ntemplates: ['a {}']\nnegative_prompt: [x]\n",
            "'negative_prompt' must be a string",
        ),
        ("classes: [cat\n", "not valid YAML"),
        ("- cat\n", "a mapping with 'classes' and 'templates'"),
    ],
)
def test_class_file_errors_are_one_line_with_the_file(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(PromptFileError) as info:
        scan_prompts(path)
    assert (
        str(info.value).startswith(str(path)) and message in str(info.value) and "\n" not in str(info.value)
    )


# --------------------------------------------------------------------------- the label field


def test_label_in_jsonl_csv_parquet(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cat", "label": " cat "}\n{"prompt": "a dog", "label": "dog"}\n')
    csv = tmp_path / "p.csv"
    csv.write_text("prompt,label\na cat,cat\na dog,dog\n")
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a cat", "a dog"], "label": ["cat", "dog"]}), parquet)
    for path in (jsonl, csv, parquet):
        assert [r.label for r in read_prompts(path)] == ["cat", "dog"]
        assert scan_prompts(path).labels == ("cat", "dog")
    # a label does not change the derived id: labelling a file keeps its images
    plain = tmp_path / "plain.txt"
    plain.write_text("a cat\na dog\n")
    assert [r.prompt_id for r in read_prompts(plain)] == [r.prompt_id for r in read_prompts(jsonl)]


def test_some_records_unlabelled_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat", "label": "cat"}\n{"prompt": "a dog"}\n')
    with pytest.raises(
        PromptFileError, match=r"p\.jsonl:2: no 'label', but other records have one \(first at .*:1\)"
    ):
        scan_prompts(path)
    path.write_text('{"prompt": "a dog"}\n{"prompt": "a cat", "label": "cat"}\n')
    with pytest.raises(PromptFileError, match=r"p\.jsonl:1: no 'label'"):
        scan_prompts(path)


@pytest.mark.parametrize(
    ("label", "message"),
    [("3", "'label' must be a string"), ('""', "'label' is empty"), ('"a\\u0000b"', "NUL")],
)
def test_bad_labels_are_refused(tmp_path, label, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat", "label": ' + label + "}\n")
    with pytest.raises(PromptFileError, match=message):
        scan_prompts(path)


def test_too_many_labels_refused(tmp_path, monkeypatch):
    import pixart_batch.prompts.scan as scan

    monkeypatch.setattr(scan, "MAX_LABELS", 2)
    path = tmp_path / "p.csv"
    path.write_text("prompt,label\na,x\nb,y\nc,x\nd,z\n")
    with pytest.raises(PromptFileError, match=r"p\.csv:5: more than 2 distinct labels"):
        scan_prompts(path)


def test_label_names_grow_by_appending_only():
    key = S.LABEL_NAMES_SETTING
    assert changed_setting({key: ["b", "c"]}, {key: ["b", "c", "a"]}) is None
    assert changed_setting({key: ["b", "c"]}, {key: ["a", "b", "c"]}) == (key, ["b", "c"], ["a", "b", "c"])
    assert changed_setting({key: ["b", "c"]}, {}) == (key, ["b", "c"], None)
    assert changed_setting({}, {key: ["a"]}) == (key, None, ["a"])


def test_shard_schema_declares_a_class_label():
    from datasets import ClassLabel, Features

    schema = S.shard_schema({S.LABEL_NAMES_SETTING: ["cat", "dog"]})
    assert schema.field(S.LABEL).type == pa.int64() and schema.names[-2:] == [S.LABEL, S.IMAGE]
    assert Features.from_arrow_schema(schema)[S.LABEL] == ClassLabel(names=["cat", "dog"])
    assert S.LABEL not in S.shard_schema({}).names


# --------------------------------------------------------------------------- whole runs (slow)


THREE = """\
classes:
  tabby cat: [tabby cat, tabby]
  goldfish:
  axolotl: an axolotl
templates: ["a photo of a {}", "a drawing of a {}"]
images_per_class: 2
"""


def _run(tmp_path, executor, fmt, text=THREE, name="out"):
    from pixart_batch.run import run_generate

    prompts = _yaml(tmp_path, text, f"{name}-{len(text)}.yaml")
    config = tiny_config(**{"ray.executor": executor, "output.format": fmt, "output.rows_per_shard": 4})
    return run_generate(config, str(prompts), str(tmp_path / name)), tmp_path / name


@pytest.fixture
def executor_env(request):
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return request.param


@pytest.mark.slow
@pytest.mark.parametrize("executor_env", ["local", "ray"], indirect=True)
@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_labels_reach_every_row(tmp_path, tiny_model, executor_env, fmt):
    from datasets import ClassLabel, load_dataset

    from pixart_batch.audit import status

    report, output = _run(tmp_path, executor_env, fmt)
    names = ["axolotl", "goldfish", "tabby cat"]
    assert report["images_generated"] == 6 and report["labels"] == dict.fromkeys(names, 2)
    assert json.loads((output / "settings.json").read_text())[S.LABEL_NAMES_SETTING] == names
    assert status(str(output))["labels"] == {name: {"planned": 2, "done": 2, "failed": 0} for name in names}
    card = (output / "README.md").read_text()
    assert "## Images per label" in card and "| 2 | tabby cat | 2 |" in card
    plan = pa.concat_tables([pq.read_table(p) for p in sorted((output / "plan").rglob("*.parquet"))])
    assert (
        sorted(set(plan.column(S.TEMPLATE).to_pylist())) == [0, 1] and plan.column(S.LABEL).type == pa.int64()
    )
    if executor_env == "local" and fmt == "parquet":
        from pixart_batch.gallery import build_gallery

        build_gallery(str(output))
        assert "<h2>Labels</h2>" in (output / "gallery" / "index.html").read_text()
    dataset = load_dataset(str(output), split="train", cache_dir=str(tmp_path / "hf-cache"))
    if fmt == "parquet":
        assert dataset.features[S.LABEL] == ClassLabel(names=names)
        got = {
            (row["prompt"], dataset.features[S.LABEL].int2str(row[S.LABEL]))
            for row in dataset.remove_columns("image")
        }
    else:
        assert all(row["cls"] == row["json"][S.LABEL] for row in dataset)
        assert all(names[row["json"][S.LABEL]] == row["json"][S.LABEL_NAME] for row in dataset)
        got = {(row["json"]["prompt"], row["json"][S.LABEL_NAME]) for row in dataset}
    assert {label for _, label in got} == set(names)
    assert all(prompt.endswith(("tabby cat", "tabby")) for prompt, label in got if label == "tabby cat")


@pytest.mark.slow
def test_rerun_with_a_new_class_appends_its_name(tmp_path, tiny_model):
    from datasets import ClassLabel, load_dataset

    from pixart_batch.run import prepare_run

    first, output = _run(tmp_path, "local", "parquet")
    grown = THREE.replace("  goldfish:\n", "  goldfish:\n  aardvark:\n")
    second, _ = _run(tmp_path, "local", "parquet", grown)
    assert second["images_skipped"] == 6 and second["images_generated"] == 2
    names = ["axolotl", "goldfish", "tabby cat", "aardvark"]  # appended, not sorted in: old ids stay
    assert json.loads((output / "settings.json").read_text())[S.LABEL_NAMES_SETTING] == names
    dataset = load_dataset(str(output), split="train", cache_dir=str(tmp_path / "hf-cache")).remove_columns(
        "image"
    )
    assert dataset.features[S.LABEL] == ClassLabel(names=names)
    by_label = {(row["prompt_id"], names[row[S.LABEL]]) for row in dataset}
    assert {label for _, label in by_label} == set(names) and len(dataset) == 8
    # the earlier shards say the same ids as the new ones
    old = [p for p in (output / "data").rglob("*.parquet") if pq.read_table(p).num_rows]
    for path in old:
        table = pq.read_table(path, columns=["prompt", S.LABEL]).to_pylist()
        assert all(
            names[row[S.LABEL]] == "tabby cat"
            for row in table
            if row["prompt"].endswith(("tabby cat", "tabby"))
        )
    # a run lacking a class keeps the list (also when the guard falls back on the shards' settings,
    # which grew between the runs); an unlabelled run over a labelled output is refused
    (output / "settings.json").unlink()
    third, _ = _run(tmp_path, "local", "parquet")
    assert third["images_generated"] == 0
    assert json.loads((output / "settings.json").read_text())[S.LABEL_NAMES_SETTING] == names
    plain = tmp_path / "plain.txt"
    plain.write_text("a photo of a goldfish\n")
    with pytest.raises(OutputError, match="setting 'output.label_names' is null"):
        prepare_run(tiny_config(**{"ray.executor": "local"}), str(plain), str(output))


@pytest.mark.parametrize("names", ['"cat"', "[1, 2]", '["cat", "cat"]'])
def test_damaged_label_names_in_settings_are_one_line(tmp_path, names):
    from pixart_batch.output import OutputDataset

    (tmp_path / "settings.json").write_text(f'{{"{S.LABEL_NAMES_SETTING}": {names}}}')
    with pytest.raises(
        OutputError, match="damaged settings .'output.label_names' is not a list of distinct names"
    ):
        OutputDataset(str(tmp_path)).validate_metadata()


def test_plan_shows_images_per_class(tiny_model, capsys):
    from pixart_batch.cli import main

    config = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
    capsys.readouterr()
    assert main(["plan", str(EXAMPLE), "--config", config, "--images-per-prompt", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["images_per_label"]) == 10 and set(data["images_per_label"].values()) == {40}
    assert main(["plan", str(EXAMPLE), "--config", config]) == 0
    out = capsys.readouterr().out
    assert "label " in out and "golf ball" in out and "10.0%" in out


@pytest.mark.slow
def test_labelled_run_over_unlabelled_images_is_refused(tmp_path, tiny_model):
    from pixart_batch.run import prepare_run, run_generate

    plain = tmp_path / "plain.txt"
    plain.write_text("a photo of a goldfish\n")
    config = tiny_config(**{"ray.executor": "local"})
    run_generate(config, str(plain), str(tmp_path / "out"))
    before = sorted(p.name for p in (tmp_path / "out").rglob("*"))
    with pytest.raises(
        OutputError, match=r"setting 'output.label_names' is \[.*\] but this output was generated with null"
    ):
        prepare_run(config, str(_yaml(tmp_path, THREE)), str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == before


@pytest.mark.slow
def test_a_generated_class_set_exports_balanced_with_its_class_names(tmp_path, tiny_model, capsys):
    """Expand → generate → export: the export keeps the ClassLabel names and counts per label in its card."""
    from datasets import ClassLabel, load_dataset

    from pixart_batch.cli import main

    _, output = _run(tmp_path, "local", "parquet")
    before = {str(p): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    target = tmp_path / "export"
    code = main(
        [
            "export",
            str(output),
            "--where",
            "label in ['goldfish', 'tabby cat']",
            "--to",
            str(target),
            "--per-label",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr()
    assert {str(p): p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    dataset = load_dataset(str(target), split="train", cache_dir=str(tmp_path / "hf-cache")).remove_columns(
        "image"
    )
    names = ["axolotl", "goldfish", "tabby cat"]
    assert dataset.features[S.LABEL] == ClassLabel(names=names)  # ids as in the source
    assert sorted(names[row[S.LABEL]] for row in dataset) == ["goldfish", "tabby cat"]
    assert "| 1 | goldfish | 1 |" in (target / "README.md").read_text()
    assert main(["verify", str(target)]) == 0
