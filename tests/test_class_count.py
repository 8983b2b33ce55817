"""Class × template files are counted, not expanded: the record count comes from the parsed file, equals
what expansion yields, and a file above the limit is refused by ``plan`` and ``generate`` before one
record is made (issue 21, situation 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixart_batch.errors import PromptFileError
from pixart_batch.prompts import classes as C
from pixart_batch.prompts import read_prompts, scan_prompts
from pixart_batch.prompts.scan import count_records

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "classes-10.yaml"
TINY = str(ROOT / "configs" / "tiny.yaml")

SMALL = {
    "synonyms": """\
classes:
  tabby cat: [tabby cat, tabby, striped cat]
  goldfish:
  axolotl: an axolotl
  zebra: []
templates: ["a photo of a {}", "a drawing of a {}"]
""",
    "per_class_below_combinations": """\
classes:
  tabby cat: [tabby cat, tabby, striped cat]
  goldfish:
templates: ["a photo of a {}", "a drawing of a {}"]
images_per_class: 4
""",
    "per_class_above_combinations_with_ratios": """\
classes:
  tabby cat: [tabby cat, tabby]
  goldfish:
  " zebra ":
templates: ["a photo of a {}", "a drawing of a {}", "a {} at night"]
aspect_ratios: ["1:1", "3:4", "4:3", "9:16"]
negative_prompt: "blurry"
images_per_class: 11
""",
    "ratios_without_per_class": """\
classes:
  "cafe\u0301": [espresso bar, bistro]
  tea room:
templates: ["a photo of a {}"]
aspect_ratios: ["1:1", "3:4"]
""",
}


def _never(*args, **kwargs):
    raise AssertionError("a record was made")


def _huge(path: Path) -> Path:
    """1,000 classes × 1,000,000 images each: 10⁹ records, every value within its own limit."""
    classes = "".join(f"  class {number}:\n" for number in range(1000))
    per_class = C.MAX_IMAGES_PER_CLASS
    path.write_text(f"classes:\n{classes}templates: ['a photo of a {{}}']\nimages_per_class: {per_class}\n")
    return path


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_count_is_exactly_what_expansion_yields(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMALL[name])
    counted = count_records(path)
    assert counted is not None
    records = read_prompts(path)
    assert counted.records == len(records) == scan_prompts(path).count
    assert len(counted.classes) == len({r.label for r in records})
    for entry in counted.classes:  # per class too
        assert counted.count_of(entry) == sum(r.label == entry.label for r in records)


def test_the_example_is_counted_and_other_formats_are_not(tmp_path):
    counted = count_records(EXAMPLE)
    assert counted is not None and counted.records == len(read_prompts(EXAMPLE)) == 200
    assert counted.describe().startswith(f"{EXAMPLE}: 10 classes → 200 records, counted before expansion")
    text = tmp_path / "p.txt"
    text.write_text("a cat\n")
    assert count_records(text) is None


def test_a_file_of_a_billion_records_is_refused_before_expansion(tmp_path, monkeypatch):
    path = _huge(tmp_path / "huge.yaml")
    monkeypatch.setattr(C, "PromptRecord", _never)
    for read in (scan_prompts, read_prompts, count_records):
        with pytest.raises(PromptFileError) as info:
            read(path)
        message = str(info.value)
        refusal = f"{path}: 1,000 classes → 1,000,000,000 records, more than the 10,000,000"
        assert message.startswith(refusal), message
        assert "\n" not in message


def test_plan_and_generate_refuse_it_in_one_line_writing_nothing(tmp_path, capsys, monkeypatch):
    from pixart_batch.cli import main

    path = _huge(tmp_path / "huge.yaml")
    monkeypatch.setattr(C, "PromptRecord", _never)
    output = tmp_path / "out"
    capsys.readouterr()
    for args in (
        ["plan", str(path), "--config", TINY],
        ["generate", "--prompts", str(path), "--output", str(output), "--config", TINY],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"pixart-batch: error: {path}: ") and "\n" not in err, err
        assert "1,000,000,000 records" in err and f"{C.MAX_RECORDS:,}" in err
    assert not output.exists()


def test_the_limit_is_inclusive(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("classes: {cat: , dog: }\ntemplates: ['a {}']\nimages_per_class: 3\n")
    monkeypatch.setattr(C, "MAX_RECORDS", 6)
    assert scan_prompts(path).count == 6
    monkeypatch.setattr(C, "MAX_RECORDS", 5)
    with pytest.raises(PromptFileError, match=r"2 classes → 6 records, more than the 5 a class"):
        scan_prompts(path)


def test_the_limit_is_in_the_readme():
    assert f"At most {C.MAX_RECORDS:,} records per class × template file" in (ROOT / "README.md").read_text()


def test_plan_shows_the_count(tiny_model, capsys):
    from pixart_batch.cli import main

    capsys.readouterr()
    assert main(["plan", str(EXAMPLE), "--config", TINY, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    counted = f"{EXAMPLE}: 10 classes → 200 records, counted before expansion"
    assert any(note.startswith(counted) for note in data["notes"]), data["notes"]
    assert data["prompts"] == 200
