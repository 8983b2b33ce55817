"""Weak inputs of issue 21: every ``--where`` construct and number is a one-line error, labels hold no
control characters and are one class in NFC and NFD, and ``generate`` into an export says what it is."""

from __future__ import annotations

import hashlib
import json
import random
import unicodedata
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import hold_a_shard

from pixart_batch import schema as S
from pixart_batch.errors import ExpressionError, OutputError, PromptFileError
from pixart_batch.expr import BOOL, LABEL, MAX_DEPTH, NUMBER, STRING, Column, parse_where
from pixart_batch.prompts import read_prompts, scan_prompts

NFC, NFD = "caf\u00e9", "cafe\u0301"
COLUMNS = {
    "seed": Column("seed", NUMBER),
    "clip_score": Column("clip_score", NUMBER),
    "prompt": Column("prompt", STRING),
    "truncated": Column("truncated", BOOL),
    "label": Column("label", LABEL, ("bird", "cat", "dog")),
}


def _refused(text: str, columns: dict[str, Column] = COLUMNS) -> str:
    with pytest.raises(ExpressionError) as caught:
        parse_where(text, columns)
    message = str(caught.value)
    assert message.startswith("--where: ") and "\n" not in message, message
    return message


# --------------------------------------------------------------------------- --where


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1 is seed", "unsupported comparison 'is' at position 1"),
        ("seed is 1", "unsupported comparison 'is' at position 1 ('seed is 1'); use == or !="),
        ("seed is not None", "unsupported comparison 'is not'"),
        ("truncated is true", "unsupported comparison 'is'"),
        ("label is 'cat'", "unsupported comparison 'is'"),
        ("'a' in prompt", "'in' needs a column on its left"),
        ("1 not in [seed]", "'not in' needs a column on its left"),
        ("seed in seed", "comparison of two columns"),
        ("seed not in 3", "'not in' needs a list of literals"),
        ("seed in [seed]", "found the name 'seed' at position 10"),
        ("seed in {1: 2}", "unsupported dict at position 9"),
        ("seed in [*x]", "found starred expression"),
        ("1 < seed < 3", "chained comparison"),
        ("seed == 1 == 1", "chained comparison"),
        ("(seed < 1) < 2", "unsupported comparison < at position 2"),
        ("(x := 1)", "unsupported assignment expression (:=)"),
        ("seed == (x := 1)", "unsupported assignment expression (:=) at position 10"),
        ("lambda: 1", "unsupported lambda at position 1"),
        ("f'{seed}' == 'a'", "unsupported f-string at position 1"),
        ("prompt == f'a'", "unsupported f-string at position 11"),
        ("seed.real > 0", "unsupported attribute at position 1"),
        ("seed[0] == 1", "unsupported subscript at position 1"),
        ("len(prompt) > 1", "unsupported call at position 1"),
        ("-seed > 1", "unsupported unary - at position 1"),
        ("~seed == 1", "unsupported unary ~"),
        ("seed == --1", "found unary - at position 9"),
        ("*seed", "syntax error at position 1"),
        ("seed == 2**99999", "unsupported arithmetic at position 9"),
        ("seed > 10**10**10", "unsupported arithmetic"),
        ("seed == 1e999", "number out of range"),
        ("seed > -1e309", "number out of range"),
        ("seed == nan", "unknown column 'nan'"),
        ("seed == float('nan')", "unsupported call"),
        ("seed == None", "found None at position 9"),
        ("seed == b'x'", "found bytes literal b'x'"),
        ("seed == 1j", "found complex number 1j"),
        ("seed == ...", "found ..."),
        ("[seed]", "unsupported list"),
        ("(seed, 1)", "unsupported tuple"),
        ("seed > 1,", "unsupported tuple"),
        ("{'a': 1}", "unsupported dict"),
        ("seed if 1 else 2", "unsupported conditional"),
        ("[x for x in y]", "unsupported comprehension"),
        ("seed in (x for x in y)", "unsupported generator expression"),
        ("await seed", "unsupported await"),
        ("(yield)", "unsupported yield"),
        ("true", "the literal true alone is not a condition"),
        ("seed == 1 or 2", "the literal 2 alone is not a condition; compare a column with it at position 14"),
        ("seed > 1 and", "syntax error at position 13 (the end of the expression)"),
        ("import os", "syntax error at position 1"),
        ("seed == 1; seed == 2", "syntax error at position 10"),
        ("séed > 1", "unknown column 'séed' (did you mean seed?"),
        ("seed > \u0661", "invalid character"),
        ("seed == 1\u200b", "non-printable character U+200B"),
        ("seed > 1\x00", "a control character (U+0000) at position 9"),
        ("seed > 1\x1b[2J", "a control character (U+001B) at position 9"),
        ("prompt == '\ud800'", "an unpaired surrogate (U+D800) at position 12"),
        ("prompt == '\\N{bogus}'", "syntax error"),
        ("(" * 1000 + "seed > 1" + ")" * 1000, "syntax error"),
        ("-" * 3000 + "1 < seed", "--where: "),
        ("not " * (MAX_DEPTH + 1) + "truncated", f"nested more than {MAX_DEPTH} deep"),
        ("(" * 150 + "truncated" + " and truncated)" * 150, f"nested more than {MAX_DEPTH} deep"),
    ],
)
def test_every_construct_is_a_one_line_error_naming_it(text, needle):
    message = _refused(text)
    assert needle in message, message


@pytest.mark.parametrize(
    ("literal", "length"),
    [("9" * 5001, "5,001"), ("9" * 4301, "4,301"), ("1_" + "0" * 5000, "5,002"), ("0x" + "f" * 5000, "5,002")]
    + [("1." + "0" * 5000, "5,002"), ("1e" + "9" * 5000, "5,002"), ("9" * 101, "101")],
)
def test_an_over_long_number_is_named_with_its_position(literal, length):
    assert f"the number at position 9 has {length} characters" in _refused(f"seed == {literal}")
    assert "the number at position 10 has" in _refused(f"seed in [{literal}]")
    assert "Exceeds the limit" not in _refused(f"{literal} < seed")


def test_positions_count_characters_not_bytes():
    assert "at position 23 ('seed is 1')" in _refused("prompt == 'ééééé' and seed is 1")
    assert "the number at position 31" in _refused("prompt == 'ééééé' and seed == " + "1" * 200)


def test_accepted_expressions_still_match():
    row = {"seed": 7, "clip_score": 28.5, "prompt": "a\\d", "truncated": False, "label": 1}
    for text in (
        "seed == 7 and prompt == 'a\\d'",
        "seed in (7,) and seed in {7}",
        "seed < 1e308",
        "not " * MAX_DEPTH + "seed == 7",
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an invalid escape ('\d') warns nothing
            condition = parse_where(text, COLUMNS)
        assert condition.matches(row) is (text.count("not ") % 2 == 0), text
    assert parse_where("seed == " + "9" * 100, COLUMNS).matches({"seed": int("9" * 100)})


def test_random_token_soup_raises_nothing_but_one_line_errors():
    tokens = "seed label prompt truncated nan x 1 -2 3.5 1e999 'a' \"b\" b'c' None true ..."
    tokens += " ( ) [ ] { } , : := ; . * ** + - ~"
    tokens += " == != < <= > >= is not in and or if else lambda for f'{x}' @ % // \\ # \t é \u200b \x00"
    words = tokens.split(" ")
    chooser = random.Random(21)
    for _ in range(3000):
        text = " ".join(chooser.choice(words) for _ in range(chooser.randint(1, 9)))
        try:
            condition = parse_where(text, COLUMNS)
        except ExpressionError as exc:
            assert str(exc).startswith("--where: ") and "\n" not in str(exc), (text, str(exc))
            continue
        condition.matches({"seed": 1, "label": 0, "prompt": "a", "truncated": True, "clip_score": None})


def test_class_names_compare_in_nfc():
    old = {"label": Column("label", LABEL, (NFD, "dog"))}  # an output that recorded the NFD spelling
    assert parse_where(f"label == '{NFC}'", old).matches({"label": 0})
    assert parse_where(f"label in ['{NFC}']", old).matches({"label": 0})
    assert not parse_where(f"label != '{NFC}'", old).matches({"label": 0})
    both = {"label": Column("label", LABEL, (NFD, NFC))}  # made before labels were normalised: one class
    assert parse_where(f"label == '{NFD}'", both).matches({"label": 1})
    assert parse_where(f"label not in ['{NFC}']", both).matches({"label": 0}) is False


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("label", "code"),
    [("ca\nt", "U+000A"), ("ca\tt", "U+0009"), ("ca\rt", "U+000D"), ("ca\x1bt", "U+001B")]
    + [("ca\x85t", "U+0085")]
    + [("ca\u200bt", "U+200B"), ("ca\u202et", "U+202E"), ("\ufeffcat", "U+FEFF"), ("ca\u2028t", "U+2028")]
    + [("ca\u00adt", "U+00AD"), ("ca\ud800t", "U+D800")],
)
def test_a_label_with_a_control_character_is_refused_naming_file_and_line(tmp_path, label, code):
    jsonl = tmp_path / "p.jsonl"
    cat = json.dumps({"prompt": "a cat", "label": label})
    jsonl.write_text('{"prompt": "a dog", "label": "dog"}\n' + cat + "\n")
    csv = tmp_path / "p.csv"
    cell = '"' + label.replace('"', '""') + '"'
    csv.write_text(f"prompt,label\na dog,dog\na cat,{cell}\n", errors="surrogatepass")
    parquet = tmp_path / "p.parquet"
    if code != "U+D800":  # Arrow holds valid UTF-8 only
        pq.write_table(pa.table({"prompt": ["a dog", "a cat"], "label": ["dog", label]}), parquet)
    classes = tmp_path / "c.yaml"
    text = f"classes:\n  dog:\n  {json.dumps(label)}:\ntemplates: ['a {{}}']\n"
    classes.write_text(text, errors="surrogatepass")
    wheres = {jsonl: "p.jsonl:2", csv: "p.csv:3", parquet: "p.parquet:row 2", classes: "c.yaml:3"}
    for path, where in wheres.items():
        if not path.exists() or (path is csv and code == "U+D800"):
            continue
        with pytest.raises(PromptFileError) as info:
            scan_prompts(path)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / where}: ") and code in message, message
        assert "\n" not in message


def test_joiners_and_surrounding_whitespace_are_fine(tmp_path):
    path = tmp_path / "p.jsonl"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # an emoji joined by zero-width joiners
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a word spelt with a zero-width non-joiner
    rows = [{"prompt": "a", "label": family}, {"prompt": "b", "label": persian}]
    rows.append({"prompt": "c", "label": "\tcat \n"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [r.label for r in read_prompts(path)] == [family, persian, "cat"]


def test_nfc_and_nfd_are_one_class(tmp_path):
    path = tmp_path / "p.jsonl"
    labels = [NFC, NFD, f" {NFD}\t", "cafe"]
    rows = [json.dumps({"prompt": f"p{n}", "label": label}) + "\n" for n, label in enumerate(labels)]
    path.write_text("".join(rows))
    assert [r.label for r in read_prompts(path)] == [NFC, NFC, NFC, "cafe"]
    assert scan_prompts(path).labels == ("cafe", NFC)
    csv = tmp_path / "p.csv"
    csv.write_text(f"prompt,label\na,{NFC}\nb,{NFD}\n")
    assert scan_prompts(csv).labels == (NFC,)


def test_a_class_file_keeps_its_text_and_ids_and_refuses_one_class_given_twice(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"classes:\n  {NFD}:\n  tea room:\ntemplates: ['a photo of a {{}}']\n")
    record = read_prompts(path)[0]
    assert record.label == NFC and unicodedata.is_normalized("NFC", record.label)
    assert record.prompt == f"a photo of a {NFD}"  # the text as written: the prompt, id and image as before
    digest = hashlib.sha256("\0".join([NFD, NFD, "a photo of a {}", "0"]).encode()).digest()
    assert record.prompt_id == f"c{digest[:8].hex()}"
    classes = f"classes:\n  {NFC}: [bistro]\n  tea room:\n  ' {NFD}': [espresso bar]\n"
    path.write_text(classes + "templates: ['a {}']\n")
    with pytest.raises(PromptFileError) as info:
        scan_prompts(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: class '{NFC}' is given twice (first at {path}:2;"), message
    assert "NFC" in message and "\n" not in message


def test_an_output_that_recorded_an_nfd_name_keeps_its_class(tmp_path):
    from pixart_batch.output import OutputDataset
    from pixart_batch.output.guard import check_settings, class_ids, label_names
    from pixart_batch.output.staging import stage_prompts

    (tmp_path / "settings.json").write_text(json.dumps({S.LABEL_NAMES_SETTING: [NFD, "dog"]}))
    output = OutputDataset(str(tmp_path))
    names = label_names(output, (NFC, "ant"))
    assert names == [NFD, "dog", "ant"]  # the recorded spelling kept, no look-alike class appended
    assert check_settings(output, {S.LABEL_NAMES_SETTING: names}) is None
    assert class_ids(names) == {NFC: 0, "dog": 1, "ant": 2}
    assert class_ids([NFD, NFC]) == {NFC: 0}  # recorded twice by an older version: the first is meant
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(f'{{"prompt": "a", "label": "{NFC}"}}\n{{"prompt": "b", "label": "ant"}}\n')
    chunks = stage_prompts(output, "run0", scan_prompts(prompts), "", names)
    assert pq.read_table(chunks[0]).column(S.LABEL).to_pylist() == [0, 2]


# --------------------------------------------------------------------------- generate into an export


def test_generate_into_an_export_says_it_is_one(tmp_path):
    from pixart_batch.output import OutputDataset
    from pixart_batch.output.guard import check_settings

    source = str(tmp_path / "made")
    export = {"source": source, "where": "clip_score >= 28", "per_label": 5}
    settings = {"generation.seed": 0, "output.format": "parquet"}
    (tmp_path / "settings.json").write_text(json.dumps({**settings, "export": export}))
    output = OutputDataset(str(tmp_path))
    assert "holds no images yet" in (check_settings(output, settings) or "")  # nothing to protect: as before
    hold_a_shard(tmp_path)
    with pytest.raises(OutputError) as info:
        check_settings(output, settings)
    message = str(info.value)
    assert message == (
        f"{output.uri}: is an export of {source} (where 'clip_score >= 28', at most 5 per label); "
        f"exports are not generated into: generate into {source} (its source) or a new output"
    )
    with pytest.raises(OutputError, match=f"is an export of {source}"):  # whatever else differs
        check_settings(output, {**settings, "generation.seed": 1})
    (tmp_path / "settings.json").write_text(json.dumps({**settings, "generation.seed": 3}))
    refused = "setting 'generation.seed' is 0 but this output was generated with 3"
    with pytest.raises(OutputError, match=refused):
        check_settings(output, settings)  # not an export: the guard as it is
