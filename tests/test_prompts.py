"""Tests for pixart_batch.prompts: every format, every size flag, every error."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from pixart_batch.errors import PromptFileError
from pixart_batch.prompts import PromptRecord, iter_prompts, parse_prompt_line, read_prompts, scan_prompts

DATA = Path(__file__).parent / "data" / "prompts"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or raw bytes) to ``tmp_path/name``."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def expect_error(path, where: str, pattern: str, reader=read_prompts) -> str:
    """Assert ``reader(path)`` fails with a one-line ``f"{path}{where}: ..."`` matching ``pattern``."""
    prefix = f"{path}{where}: "
    with pytest.raises(PromptFileError, match=re.escape(prefix) + pattern) as info:
        reader(path) if reader is read_prompts else list(reader(path))
    message = str(info.value)
    assert message.startswith(prefix), message
    assert len(message.splitlines()) == 1, message
    return message


def derived(key: str) -> str:
    """The documented content id of ``key``."""
    return "p" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def write_jsonl(tmp_path: Path, rows: list, name: str = "p.jsonl") -> Path:
    """Write JSON values one per line (strings are written verbatim)."""
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    return write(tmp_path, name, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- parse_prompt_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Arch --ar 1:4", ("Arch", None, None, 0.25)),
        ("a man, 3D rendering, 8k, --ar 4:3", ("a man, 3D rendering, 8k,", None, None, 4 / 3)),
        ("photography --ar 6144:4096", ("photography", None, None, 1.5)),
        ("hyper-realistic --ar 128:99", ("hyper-realistic", None, None, 128 / 99)),
        ("a lighthouse --aspect_ratio 3:2", ("a lighthouse", None, None, 1.5)),
        ("a tower --ar 1.5:1", ("a tower", None, None, 1.5)),
        ("a tower --ar .5:1.", ("a tower", None, None, 0.5)),
        ("a red cube --hw 64:96", ("a red cube", 96, 64, None)),
        ("  padded\t--ar 1:2\t ", ("padded", None, None, 0.5)),
        ("spaces   before  --hw 80:80   ", ("spaces   before", 80, 80, None)),
        ("plain text", ("plain text", None, None, None)),
        ("a -- b --- c", ("a -- b --- c", None, None, None)),
        ("use --art 1:2 and --arx", ("use --art 1:2 and --arx", None, None, None)),
        ("glued--ar 1:2", ("glued--ar 1:2", None, None, None)),
        (
            "https://example.com/x.png?a=1&b=2 --ar 1:1",
            ("https://example.com/x.png?a=1&b=2", None, None, 1.0),
        ),
    ],
)
def test_parse_prompt_line(line, expected):
    prompt, width, height, ratio = parse_prompt_line(line, "f.txt:1")
    assert (prompt, width, height) == expected[:3]
    assert ratio == pytest.approx(expected[3]) if expected[3] is not None else ratio is None


BAD_LINES = [
    ("a --ar 0:1", r"--ar needs two positive numbers h:w \(got '0:1'\)"),
    ("a --ar 1:0", r"--ar needs two positive numbers h:w \(got '1:0'\)"),
    ("a --ar 0.0:1", r"--ar needs two positive numbers"),
    ("a --ar a:b", r"--ar needs two positive numbers h:w \(got 'a:b'\)"),
    ("a --ar 4", r"--ar needs two positive numbers h:w \(got '4'\)"),
    ("a --ar -1:2", r"--ar needs two positive numbers"),
    ("a --ar 1:2:3", r"--ar needs two positive numbers"),
    ("a --ar", r"--ar needs a value h:w"),
    ("a --aspect_ratio 1:x", r"--aspect_ratio needs two positive numbers"),
    ("a --hw 0:512", r"--hw needs two positive integers h:w in pixels \(got '0:512'\)"),
    ("a --hw -5:512", r"--hw needs two positive integers h:w in pixels \(got '-5:512'\)"),
    ("a --hw 64.5:64", r"--hw needs two positive integers"),
    ("a --hw 64x64", r"--hw needs two positive integers"),
    ("a --hw", r"--hw needs a value h:w"),
    ("a --ar 1:2 --ar 1:3", r"more than one aspect ratio flag \(--ar and --ar\)"),
    ("a --ar 1:2 --aspect_ratio 1:2", r"more than one aspect ratio flag \(--ar and --aspect_ratio\)"),
    ("a --hw 64:64 --hw 64:64", r"more than one --hw flag"),
    ("a --ar 1:2 --hw 64:64", r"both --ar and --hw given"),
    ("a --hw 64:64 --aspect_ratio 1:2", r"both --aspect_ratio and --hw given"),
    ("a --ar 1:2 then more text", r"unexpected 'then' after a size flag: size flags must be at the end"),
    ("a --ar 1:2 --seed 3", r"unexpected '--seed' after a size flag: size flags must be at the end"),
    ("--ar 1:2", r"prompt text is empty \(only size flags\)$"),
    ("   --hw 64:64  ", r"prompt text is empty \(only size flags\)$"),
]


@pytest.mark.parametrize(("line", "pattern"), BAD_LINES)
def test_parse_prompt_line_errors(line, pattern):
    with pytest.raises(PromptFileError, match=r"^f\.txt:7: " + pattern):
        parse_prompt_line(line, "f.txt:7")


def test_parse_prompt_line_empty_text():
    with pytest.raises(PromptFileError, match=r"^f\.txt:2: prompt text is empty$"):
        parse_prompt_line("  \t ", "f.txt:2")


# --------------------------------------------------------------------------- txt


def test_mixed_txt_file():
    path = DATA / "mixed.txt"
    records = read_prompts(path)
    assert all(isinstance(r, PromptRecord) for r in records)
    assert len(records) == 15
    by_line = {int(r.source.rsplit(":", 1)[1]): r for r in records}
    assert sorted(by_line) == [1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18]
    assert all(r.source == f"{path}:{n}" for n, r in by_line.items())
    assert all(r.negative_prompt is None for r in records)

    assert (by_line[1].prompt, by_line[1].aspect_ratio) == ("Arch", 0.25)
    assert by_line[4].prompt.endswith("3D rendering, 8k,")
    assert by_line[4].aspect_ratio == pytest.approx(4 / 3)
    assert by_line[5].aspect_ratio == pytest.approx(128 / 99)
    assert by_line[6].aspect_ratio == pytest.approx(1.5)
    assert by_line[8].prompt == "<b>bold</b> &amp; text, a poster of a cat"
    assert by_line[9].prompt == "A logo like https://example.com/x.png?size=64&v=2 -- minimal, flat"
    assert (by_line[10].prompt, by_line[10].width, by_line[10].height) == ("a red cube on a table", 96, 64)
    assert by_line[10].aspect_ratio is None
    assert (by_line[11].prompt, by_line[11].aspect_ratio) == ("a tall lighthouse at dusk", 1.5)
    assert (by_line[12].prompt, by_line[12].aspect_ratio) == ("a tall tower", 1.5)
    assert (by_line[18].prompt, by_line[18].width, by_line[18].height) == ("一只可爱的小猫", 80, 80)
    assert sum(r.aspect_ratio is not None for r in records) == 8
    assert sum(r.width is not None for r in records) == 2
    for r in records:
        if r.width is None:
            assert r.height is None
        assert "--ar" not in r.prompt and "--hw" not in r.prompt and "--aspect_ratio" not in r.prompt

    # Identical lines 13 and 16: same base id, the repeat numbered.
    assert by_line[13].prompt == by_line[16].prompt
    assert by_line[16].prompt_id == by_line[13].prompt_id + "-1"
    assert by_line[13].prompt_id == derived(by_line[13].prompt)
    assert by_line[11].prompt_id == derived("a tall lighthouse at dusk   --aspect_ratio 3:2")
    assert len({r.prompt_id for r in records}) == len(records)
    assert all(re.fullmatch(r"p[0-9a-f]{16}(-[0-9]+)?", r.prompt_id) for r in records)


def test_iter_prompts_matches_read_prompts_and_validates_first(tmp_path):
    assert list(iter_prompts(DATA / "mixed.txt")) == read_prompts(DATA / "mixed.txt")
    scan = scan_prompts(DATA / "mixed.txt")
    assert scan.count == len(read_prompts(DATA / "mixed.txt"))
    assert list(iter_prompts(DATA / "mixed.txt", scan)) == read_prompts(DATA / "mixed.txt")
    path = write(tmp_path, "p.txt", "first\nsecond\n\nbroken --ar 0:1\n")
    # The whole file is validated before the first record is handed out.
    with pytest.raises(PromptFileError, match=re.escape(f"{path}:4: --ar needs")):
        iter_prompts(path)


def test_scan_keeps_no_record_per_prompt(tmp_path):
    path = write(tmp_path, "p.txt", "".join(f"prompt {i}\n" for i in range(5000)) + "prompt 7\nprompt 7\n")
    scan = scan_prompts(path)
    assert scan.count == 5002 and len(scan.repeated) == 1
    ids = [r.prompt_id for r in iter_prompts(path, scan)]
    assert len(set(ids)) == 5002 and ids[-1].endswith("-2") and ids[-2].endswith("-1")


@pytest.mark.parametrize(("line", "pattern"), BAD_LINES)
def test_txt_flag_errors_name_file_and_line(tmp_path, line, pattern):
    path = write(tmp_path, "p.txt", f"a good prompt --ar 1:2\n\n{line}\nlater\n")
    expect_error(path, ":3", pattern)


def test_txt_crlf_and_bom(tmp_path):
    plain = read_prompts(write(tmp_path, "a.txt", "one --ar 1:2\ntwo\n"))
    crlf_bom = read_prompts(write(tmp_path, "b.txt", b"\xef\xbb\xbfone --ar 1:2\r\ntwo\r\n"))
    assert [(r.prompt_id, r.prompt, r.aspect_ratio) for r in plain] == [
        (r.prompt_id, r.prompt, r.aspect_ratio) for r in crlf_bom
    ]
    assert crlf_bom[0].prompt == "one"
    assert crlf_bom[1].prompt == "two"


def test_txt_last_line_without_newline(tmp_path):
    records = read_prompts(write(tmp_path, "p.txt", "a\nb --hw 64:64"))
    assert [(r.prompt, r.width) for r in records] == [("a", None), ("b", 64)]


def test_txt_invalid_utf8_names_line(tmp_path):
    path = write(tmp_path, "p.txt", b"fine\n\nalso fine\ncaf\xe9 latin-1\nnext\n")
    message = expect_error(path, ":4", r"not valid UTF-8 \(byte 0xe9 at column 4\)")
    assert "save the file as UTF-8" in message


def test_txt_utf16_hint(tmp_path):
    path = write(tmp_path, "p.txt", "a cat\n".encode("utf-16"))
    expect_error(path, ":1", r"not valid UTF-8 .*looks like UTF-16")


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"])
def test_txt_empty_file(tmp_path, content):
    path = write(tmp_path, "p.txt", content)
    expect_error(path, "", r"no prompts \(file is empty\)$")
    expect_error(path, "", r"no prompts \(file is empty\)$", reader=iter_prompts)


def test_txt_only_blank_lines(tmp_path):
    path = write(tmp_path, "p.txt", "\n  \n\t\r\n\n")
    expect_error(path, "", r"no prompts \(only blank lines\)$")


# --------------------------------------------------------------------------- ids


def test_ids_stable_when_appending_and_inserting(tmp_path):
    base = ["a cat", "a dog --ar 1:2", "a bird", "a cat"]
    original = {r.prompt: r.prompt_id for r in read_prompts(write(tmp_path, "a.txt", "\n".join(base)))}
    appended = read_prompts(write(tmp_path, "b.txt", "\n".join(base + ["a fish", "a cat"])))
    inserted = read_prompts(
        write(tmp_path, "c.txt", "\n".join(["new first"] + base[:2] + ["\n", "new"] + base[2:]))
    )
    for records in (appended, inserted):
        ids = [r.prompt_id for r in records]
        for prompt in ("a dog", "a bird"):
            assert next(r.prompt_id for r in records if r.prompt == prompt) == original[prompt]
        cat = derived("a cat")
        assert ids.count(cat) == 1 and f"{cat}-1" in ids
        assert len(set(ids)) == len(ids)
    assert [r.prompt_id for r in appended if r.prompt == "a cat"] == [
        derived("a cat"),
        derived("a cat") + "-1",
        derived("a cat") + "-2",
    ]


def test_duplicate_lines_numbered_in_file_order(tmp_path):
    records = read_prompts(write(tmp_path, "p.txt", "x\ny\nx\n  x  \nx --ar 1:1\n"))
    assert [r.prompt_id for r in records] == [
        derived("x"),
        derived("y"),
        derived("x") + "-1",
        derived("x") + "-2",
        derived("x --ar 1:1"),
    ]


def test_same_prompt_gets_same_id_in_every_format(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    txt = read_prompts(write(tmp_path, "p.txt", "a cat --hw 64:96\nplain\n"))
    jsonl = read_prompts(
        write_jsonl(tmp_path, [{"prompt": "a cat --hw 64:96"}, {"prompt": "plain", "extra": 1}])
    )
    csv_records = read_prompts(write(tmp_path, "p.csv", "prompt\na cat --hw 64:96\nplain\n"))
    pq.write_table(pa.table({"prompt": ["a cat --hw 64:96", "plain"]}), tmp_path / "p.parquet")
    parquet = read_prompts(tmp_path / "p.parquet")
    as_columns = read_prompts(
        write_jsonl(tmp_path, [{"prompt": "a cat", "width": 96, "height": 64}], "c.jsonl")
    )
    expected = [derived("a cat --hw 64:96"), derived("plain")]
    for records in (txt, jsonl, csv_records, parquet):
        assert [r.prompt_id for r in records] == expected
        assert (records[0].prompt, records[0].width, records[0].height) == ("a cat", 96, 64)
    assert as_columns[0].prompt_id == expected[0]


def test_negative_prompt_changes_derived_id(tmp_path):
    records = read_prompts(
        write_jsonl(
            tmp_path,
            [
                {"prompt": "a cat"},
                {"prompt": "a cat", "negative_prompt": "blurry"},
                {"prompt": "a cat", "negative_prompt": ""},
                {"prompt": "a cat", "negative_prompt": None},
            ],
        )
    )
    ids = [r.prompt_id for r in records]
    assert ids[0] == derived("a cat") and ids[3] == derived("a cat") + "-1"
    assert ids[1] == derived("a cat\0blurry") and ids[2] == derived("a cat\0")
    assert [r.negative_prompt for r in records] == [None, "blurry", "", None]


# --------------------------------------------------------------------------- jsonl


def test_jsonl_file_with_ids():
    path = DATA / "with_ids.jsonl"
    records = read_prompts(path)
    assert len(records) == 9
    cat, dog, fruit, lighthouse, bold, city, cactus, cactus2, kitten = records
    assert cat == PromptRecord(
        "cat-01", "a cat sitting on a mat", "blurry, low quality", 64, 96, None, f"{path}:1"
    )
    assert (dog.prompt_id, dog.width, dog.height, dog.negative_prompt) == ("dog_02", 96, 64, None)
    assert (fruit.prompt_id, fruit.negative_prompt) == ("3", "")
    assert (lighthouse.prompt, lighthouse.aspect_ratio, lighthouse.width) == (
        "a lighthouse at dusk",
        4 / 3,
        None,
    )
    assert lighthouse.prompt_id == derived("a lighthouse at dusk --ar 4:3")
    assert lighthouse.source == f"{path}:4"
    assert (bold.prompt, bold.width, bold.height) == ("<b>bold</b> &amp; text on a sign", 80, 80)
    assert bold.source == f"{path}:6"
    assert (city.prompt_id, city.aspect_ratio) == ("city", 0.25)
    assert cactus2.prompt_id == cactus.prompt_id + "-1"
    assert (kitten.prompt, kitten.negative_prompt, kitten.width, kitten.prompt_id) == (
        "一只可爱的小猫",
        None,
        None,
        derived("一只可爱的小猫"),
    )


def test_ndjson_extension_and_case(tmp_path):
    records = read_prompts(write(tmp_path, "P.NDJSON", '{"prompt": " hi "}\n'))
    assert records[0].prompt == "hi"


JSONL_ERRORS = [
    (
        '{"prompt": "a", ',
        r"not valid JSON \(Expecting property name enclosed in double quotes at column 16\)",
    ),
    ("just text", r"not valid JSON \(Expecting value at column 1\)"),
    ('["a cat"]', r"expected a JSON object with a 'prompt' key, got list"),
    ('"a cat"', r"expected a JSON object with a 'prompt' key, got str"),
    ({"text": "a cat"}, r"'prompt' is missing or null"),
    ({"prompt": None}, r"'prompt' is missing or null"),
    ({"prompt": 5}, r"'prompt' must be a string, not int"),
    ({"prompt": "   "}, r"prompt text is empty$"),
    ({"prompt": "--ar 1:2"}, r"prompt text is empty \(only size flags\)"),
    ({"prompt": "a --ar 0:1"}, r"--ar needs two positive numbers"),
    ({"prompt": "a", "width": 64}, r"'width' given without 'height'; give both or neither"),
    ({"prompt": "a", "height": 64, "width": None}, r"'height' given without 'width'"),
    ({"prompt": "a", "width": 0, "height": 64}, r"'width' must be a positive integer \(got '0'\)"),
    ({"prompt": "a", "width": 64, "height": -8}, r"'height' must be a positive integer \(got '-8'\)"),
    ({"prompt": "a", "width": 64.5, "height": 64}, r"'width' must be a positive integer \(got '64.5'\)"),
    ({"prompt": "a", "width": "wide", "height": 64}, r"'width' must be a positive integer \(got 'wide'\)"),
    ({"prompt": "a", "width": True, "height": 64}, r"'width' must be a positive integer \(got 'True'\)"),
    ({"prompt": "a --hw 64:64", "width": 64, "height": 64}, r"size given twice: as a flag in the prompt"),
    ({"prompt": "a --ar 1:2", "width": 64, "height": 64}, r"size given twice: as a flag in the prompt"),
    ({"prompt": "a --ar 1:2", "aspect_ratio": "1:2"}, r"size given twice: 'aspect_ratio' together with"),
    ({"prompt": "a", "aspect_ratio": "1:2", "width": 64, "height": 64}, r"size given twice: 'aspect_ratio'"),
    ({"prompt": "a", "aspect_ratio": 0.5}, r"'aspect_ratio' must be a string 'h:w', not float"),
    ({"prompt": "a", "aspect_ratio": "2"}, r"'aspect_ratio' needs two positive numbers h:w \(got '2'\)"),
    ({"prompt": "a", "negative_prompt": ["x"]}, r"'negative_prompt' must be a string, not list"),
    ({"prompt": "a", "id": "a.b"}, r"id 'a.b' is not allowed: ids are 1-128 characters from A-Z a-z 0-9 _ -"),
    ({"prompt": "a", "id": "dir/x"}, r"id 'dir/x' is not allowed"),
    ({"prompt": "a", "id": "has space"}, r"id 'has space' is not allowed"),
    ({"prompt": "a", "id": ""}, r"id '' is not allowed"),
    ({"prompt": "a", "id": "ü"}, r"id 'ü' is not allowed"),
    ({"prompt": "a", "id": 1.5}, r"'id' must be a string or an integer, not float"),
    ({"prompt": "a", "id": True}, r"'id' must be a string or an integer, not bool"),
    ('{"prompt": "bad \\ud800 surrogate"}', r"text contains an unpaired surrogate escape"),
    (
        '{"prompt": "a", "id": "n", "negative_prompt": "\\udfff"}',
        r"text contains an unpaired surrogate escape",
    ),
    ('{"prompt": "a cat", "prompt": "a dog"}', r"duplicate key 'prompt'$"),
    ('{"prompt": "a", "meta": {"x": [1, {"y": 1, "y": 2}]}}', r"duplicate key 'y'$"),
    ('{"prompt": "a", "w\\u0069dth": 64, "width": 64}', r"duplicate key 'width'$"),
]


@pytest.mark.parametrize(("row", "pattern"), JSONL_ERRORS)
def test_jsonl_errors_name_file_and_line(tmp_path, row, pattern):
    path = write_jsonl(tmp_path, [{"prompt": "ok", "id": "ok"}, "", row, {"prompt": "after"}])
    expect_error(path, ":3", pattern)


def test_jsonl_int_id_and_unknown_keys(tmp_path):
    records = read_prompts(write_jsonl(tmp_path, [{"id": 7, "prompt": "a", "meta": {"x": [1]}, "seed": 3}]))
    assert records[0].prompt_id == "7"


def test_jsonl_blank_and_empty(tmp_path):
    expect_error(write(tmp_path, "a.jsonl", ""), "", r"no prompts \(file is empty\)$")
    expect_error(write(tmp_path, "b.jsonl", "\n \n"), "", r"no prompts \(only blank lines\)$")


def test_jsonl_invalid_utf8(tmp_path):
    path = write(tmp_path, "p.jsonl", b'{"prompt": "a"}\n{"prompt": "\xff"}\n')
    expect_error(path, ":2", r"not valid UTF-8 \(byte 0xff at column 13\)")


def test_duplicate_explicit_ids(tmp_path):
    path = write_jsonl(
        tmp_path, [{"id": "x", "prompt": "a"}, {"prompt": "b"}, "", {"id": "x", "prompt": "c"}]
    )
    expect_error(path, ":4", r"duplicate id 'x' \(first at line 1\)$")


def test_duplicate_int_and_string_id(tmp_path):
    path = write_jsonl(tmp_path, [{"id": 1, "prompt": "a"}, {"id": "1", "prompt": "b"}])
    expect_error(path, ":2", r"duplicate id '1' \(first at line 1\)$")


def test_derived_id_colliding_with_explicit_id(tmp_path):
    taken = derived("a cat")
    path = write_jsonl(tmp_path, [{"prompt": "a cat"}, {"id": taken, "prompt": "other"}])
    message = expect_error(
        path, ":2", rf"id '{taken}' derived from the text at line 1 equals the explicit id at line 2"
    )
    assert "give the row at line 1 an explicit id" in message
    path = write_jsonl(tmp_path, [{"id": taken, "prompt": "other"}, {"prompt": "a cat"}], "b.jsonl")
    expect_error(
        path, ":2", rf"id '{taken}' derived from the text at line 2 equals the explicit id at line 1"
    )


def test_mixed_explicit_and_derived_ids(tmp_path):
    records = read_prompts(
        write_jsonl(tmp_path, [{"id": "a", "prompt": "x"}, {"prompt": "x"}, {"prompt": "x"}])
    )
    assert [r.prompt_id for r in records] == ["a", derived("x"), derived("x") + "-1"]


# --------------------------------------------------------------------------- csv


def test_csv_quoting_newlines_and_line_numbers(tmp_path):
    content = (
        "id,prompt,negative_prompt,width,height,notes\n"
        'a1,"a cat, sitting",blurry,64,96,whatever\n'
        "\n"
        ',"a two-line\nprompt --ar 1:2",,,,\n'
        ",,,,,\n"
        'b2, "quoted ""word"" here","",80.0, 80 ,\n'
        ",<b>bold</b> &amp; text,,,,\n"
    )
    path = write(tmp_path, "p.csv", content)
    records = read_prompts(path)
    assert records == [
        PromptRecord("a1", "a cat, sitting", "blurry", 64, 96, None, f"{path}:2"),
        PromptRecord(
            derived("a two-line\nprompt --ar 1:2"), "a two-line\nprompt", None, None, None, 0.5, f"{path}:4"
        ),
        PromptRecord("b2", 'quoted "word" here', None, 80, 80, None, f"{path}:7"),
        PromptRecord(
            derived("<b>bold</b> &amp; text"), "<b>bold</b> &amp; text", None, None, None, None, f"{path}:8"
        ),
    ]


def test_csv_bom_and_crlf(tmp_path):
    path = write(tmp_path, "p.csv", b"\xef\xbb\xbfprompt,id\r\nhello,h1\r\n")
    assert read_prompts(path) == [PromptRecord("h1", "hello", None, None, None, None, f"{path}:2")]


CSV_ERRORS = [
    ("x,y,", r"row has 3 fields but the header has 4"),
    ("x", r"row has 1 fields but the header has 4"),
    (",,,", None),  # all-empty row: skipped
    ("id1,,,", r"prompt text is empty$"),
    ("id1,   ,,", r"prompt text is empty$"),
    (",a,wide,64", r"'width' must be a positive integer \(got 'wide'\)"),
    (",a,0,64", r"'width' must be a positive integer \(got '0'\)"),
    (",a,64,", r"'width' given without 'height'"),
    (",a --hw 64:64,64,64", r"size given twice"),
    ("bad.id,a,,", r"id 'bad.id' is not allowed"),
    (',"unterminated,,', r"malformed CSV \(unexpected end of data\)"),
    (',"a"b,,', r"malformed CSV \(',' expected after '\"'\)"),
]


@pytest.mark.parametrize(("row", "pattern"), CSV_ERRORS)
def test_csv_errors_name_file_and_line(tmp_path, row, pattern):
    path = write(tmp_path, "p.csv", f'id,prompt,width,height\nok,"multi\nline",,\n\n{row}\nlast,x,,\n')
    if pattern is None:
        assert [r.prompt_id for r in read_prompts(path)] == ["ok", "last"]
    else:
        expect_error(path, ":5", pattern)


def test_csv_missing_prompt_column(tmp_path):
    path = write(tmp_path, "p.csv", "id,text,width\n1,a,64\n")
    hint = r"; to read the prompts from 'text', pass --prompt-column text$"
    expect_error(path, "", r"no 'prompt' column \(columns: id, text, width\)" + hint)


def test_csv_repeated_column(tmp_path):
    path = write(tmp_path, "p.csv", "prompt,prompt\na,b\n")
    expect_error(path, "", r"column 'prompt' appears more than once$")
    path = write(tmp_path, "q.csv", "prompt,note, note\na,b,c\n")  # an ignored column is no exception
    expect_error(path, "", r"column 'note' appears more than once$")


def test_csv_empty_and_header_only(tmp_path):
    expect_error(write(tmp_path, "a.csv", ""), "", r"no prompts \(file is empty\)$")
    expect_error(
        write(tmp_path, "b.csv", "prompt,id\n\n,\n"), "", r"no prompts \(no rows after the header\)$"
    )


def test_csv_invalid_utf8(tmp_path):
    path = write(tmp_path, "p.csv", b'prompt\n"two\nlines"\ncaf\xe9\n')
    expect_error(path, ":4", r"not valid UTF-8")


def test_csv_duplicate_ids(tmp_path):
    path = write(tmp_path, "p.csv", 'id,prompt\nx,"a\nb"\ny,c\nx,d\n')
    expect_error(path, ":5", r"duplicate id 'x' \(first at line 2\)$")


# --------------------------------------------------------------------------- parquet


def test_parquet_rows_types_and_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 20_000
    table = pa.table(
        {
            "prompt": pa.array([f"prompt {i}" for i in range(n)]).dictionary_encode(),
            "id": pa.array([i if i % 2 else None for i in range(n)], pa.int64()),
            "negative_prompt": pa.array(["ugly" if i == 0 else None for i in range(n)]),
            "width": pa.array([64.0 if i == 1 else None for i in range(n)], pa.float64()),
            "height": pa.array([96 if i == 1 else None for i in range(n)], pa.int32()),
            "aspect_ratio": pa.array(["1:2" if i == 2 else None for i in range(n)]),
            "extra": pa.array(range(n)),
        }
    )
    path = tmp_path / "p.parquet"
    pq.write_table(table, path, row_group_size=3000)
    records = read_prompts(path)
    assert len(records) == n
    assert records[0] == PromptRecord(
        derived("prompt 0\0ugly"), "prompt 0", "ugly", None, None, None, f"{path}:row 1"
    )
    assert records[1] == PromptRecord("1", "prompt 1", None, 64, 96, None, f"{path}:row 2")
    assert (records[2].aspect_ratio, records[2].prompt_id) == (0.5, derived("prompt 2 --ar 1:2"))
    assert records[-1].source == f"{path}:row {n}"
    assert len({r.prompt_id for r in records}) == n


def test_parquet_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")

    def parquet(name, columns):
        path = tmp_path / name
        pq.write_table(pa.table(columns), path)
        return path

    expect_error(parquet("a.parquet", {"prompt": ["a", "b", None]}), ":row 3", r"'prompt' is missing or null")
    expect_error(parquet("b.parquet", {"prompt": ["a", ""]}), ":row 2", r"prompt text is empty$")
    expect_error(parquet("c.parquet", {"prompt": [1, 2]}), ":row 1", r"'prompt' must be a string, not int")
    expect_error(
        parquet("d.parquet", {"prompt": ["a", "b"], "width": [64, 0], "height": [64, 64]}),
        ":row 2",
        r"'width' must be a positive integer \(got '0'\)",
    )
    expect_error(
        parquet("e.parquet", {"prompt": ["a", "b"], "width": [64, 64.5], "height": [64, 64]}),
        ":row 2",
        r"'width' must be a positive integer \(got '64.5'\)",
    )
    hint = r"; to read the prompts from 'text', pass --prompt-column text$"
    expect_error(
        parquet("f.parquet", {"text": ["a"], "id": [1]}),
        "",
        r"no 'prompt' column \(columns: text, id\)" + hint,
    )
    expect_error(
        parquet("g.parquet", {"prompt": pa.array([], pa.string())}), "", r"no prompts \(file has no rows\)$"
    )
    expect_error(
        parquet("h.parquet", {"prompt": ["a", "b", "c"], "id": ["x", "y", "x"]}),
        ":row 3",
        r"duplicate id 'x' \(first at row 1\)$",
    )
    expect_error(parquet("i.parquet", {"prompt": ["a"], "id": ["a/b"]}), ":row 1", r"id 'a/b' is not allowed")
    bogus = write(tmp_path, "j.parquet", b"this is not parquet at all\n")
    expect_error(bogus, "", r"not a readable Parquet file \(")
    twice = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["prompt", "prompt"])
    pq.write_table(twice, tmp_path / "k.parquet")
    expect_error(tmp_path / "k.parquet", "", r"column 'prompt' appears more than once$")
    extra = pa.Table.from_arrays([pa.array(["a"]), pa.array([1]), pa.array([2])], names=["prompt", "x", "x"])
    pq.write_table(extra, tmp_path / "l.parquet")
    expect_error(tmp_path / "l.parquet", "", r"column 'x' appears more than once$")


# --------------------------------------------------------------------------- paths and messages


def test_unsupported_extension_fails_at_once(tmp_path):
    path = write(tmp_path, "p.json", '{"prompt": "a"}')
    for reader in (read_prompts, iter_prompts):
        with pytest.raises(PromptFileError) as info:
            reader(path)  # no iteration needed
        assert str(info.value) == (
            f"{path}: unsupported prompt file type '.json'; "
            "use one of .txt, .jsonl, .ndjson, .csv, .parquet, .yaml, .yml"
        )
    expect_error(write(tmp_path, "prompts", "a"), "", r"unsupported prompt file type '\(no extension\)'")


def test_missing_file_and_directory(tmp_path):
    expect_error(tmp_path / "nope.txt", "", r"no such file$")
    expect_error(tmp_path / "nope.parquet", "", r"no such file$")
    (tmp_path / "dir.txt").mkdir()
    expect_error(tmp_path / "dir.txt", "", r"is a directory, not a prompt file$")


def test_path_as_given_str_and_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "rel.txt", "ok\n--ar 1:2\n")
    expect_error("rel.txt", ":2", r"prompt text is empty \(only size flags\)")
    expect_error(Path("rel.txt"), ":2", r"prompt text is empty \(only size flags\)")
    write(tmp_path, "ok.txt", "fine\n")
    assert read_prompts("ok.txt")[0].source == "ok.txt:1"
    assert read_prompts(Path("ok.txt"))[0].source == "ok.txt:1"


def test_long_text_is_truncated_in_messages(tmp_path):
    long_id = "x." + "y" * 500
    path = write_jsonl(tmp_path, [{"id": long_id, "prompt": "a"}])
    message = expect_error(path, ":1", r"id 'x\.y+\.\.\.' is not allowed")
    assert len(message) < len(str(path)) + 200
    path = write(tmp_path, "p.txt", "a --ar " + "9" * 300 + "\n")
    message = expect_error(path, ":1", r"--ar needs two positive numbers h:w \(got '9+\.\.\.'\)")
    assert len(message) < len(str(path)) + 200


def test_messages_stay_on_one_line_with_newlines_in_values(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "a", "id": "two\nlines"}])
    message = expect_error(path, ":1", r"id 'two\\nlines' is not allowed")
    assert "\n" not in message


# --------------------------------------------------------------------------- ids: stability and injectivity

# Computed with the code before NUL characters were refused (existing datasets resume by these ids).
FIXED_IDS: dict[str, list[tuple[str | dict[str, object], str | None]]] = {
    "b.txt": [
        ("a cat\n", "p51e4674156077982"),
        ("a red cube on a table --hw 64:96\n", "p8744689ad0fcfc61"),
        ("一只可爱的小猫 --ar 3:4\n", "p0afc956d5929eebb"),
        ("  padded prompt, with comma,  \n", "pb82f464fdd174581"),
        ("a cat\n", "p51e4674156077982-1"),
    ],
    "b.jsonl": [
        ({"prompt": "a cat", "negative_prompt": "blurry, low quality"}, "paba27f8a60ab41c9"),
        ({"prompt": "a cat", "width": 96, "height": 64}, "pcada00a429110567"),
        ({"prompt": "a tower", "aspect_ratio": " 1:2 ", "negative_prompt": ""}, "pce1280dda71a46a3"),
        ({"prompt": "a lighthouse at dusk --ar 4:3", "negative_prompt": "  fog  "}, "p7d8473679b3d1e47"),
        ({"prompt": "café – naïve ☕", "width": "80", "height": 80.0}, "p43baeb3524d5ee29"),
    ],
    "b.csv": [
        ("prompt,negative_prompt,width,height,aspect_ratio\n", None),
        ('"a cat, sitting",blurry,64,96,\n', "p80533135a1ebb875"),
        ("a dog,,,,2:3\n", "p06a33ff2b44a2f15"),
    ],
}


def test_ids_of_ordinary_prompts_unchanged(tmp_path):
    for name, rows in FIXED_IDS.items():
        lines = [
            row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) + "\n" for row, _ in rows
        ]
        records = read_prompts(write(tmp_path, name, "".join(lines)))
        assert [r.prompt_id for r in records] == [prompt_id for _, prompt_id in rows if prompt_id], name
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "prompt": ["a cat", "a cat"],
            "negative_prompt": [None, "ugly"],
            "width": [None, 512],
            "height": [None, 1024],
        }
    )
    pq.write_table(table, tmp_path / "b.parquet")
    assert [r.prompt_id for r in read_prompts(tmp_path / "b.parquet")] == [
        "p51e4674156077982",
        "peec4a66822109e43",
    ]


def test_nul_in_text_is_refused(tmp_path):
    # The issue: this .txt line had the id of {"prompt": "a cat", "negative_prompt": "blurry"}.
    path = write(tmp_path, "p.txt", "fine\na cat\0blurry\n")
    expect_error(path, ":2", r"prompt text contains a NUL byte \(character 6\); remove it$")
    assert read_prompts(write_jsonl(tmp_path, [{"prompt": "a cat", "negative_prompt": "blurry"}], "ok.jsonl"))
    for field, row in [
        ("prompt", {"prompt": "a cat\0blurry"}),
        ("negative_prompt", {"prompt": "a cat", "negative_prompt": "blur\0ry"}),
        ("id", {"prompt": "a cat", "id": "x\0"}),
    ]:
        path = write_jsonl(tmp_path, [{"prompt": "ok"}, row], f"{field}.jsonl")
        expect_error(path, ":2", rf"'{field}' contains a NUL byte \(character \d+\); remove it$")
    expect_error(write(tmp_path, "p.csv", "prompt,id\na\0b,x\n"), ":2", r"'prompt' contains a NUL byte")
    with pytest.raises(PromptFileError, match=r"^f\.txt:3: prompt text contains a NUL byte"):
        parse_prompt_line("a\0b --ar 1:2", "f.txt:3")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"prompt": ["a", "b"], "negative_prompt": [None, "\0"]}), tmp_path / "p.parquet")
    expect_error(tmp_path / "p.parquet", ":row 2", r"'negative_prompt' contains a NUL byte")


ID_PIECES = [
    "a",
    "b",
    "cat",
    " ",
    "  ",
    "\t",
    ",",
    ":",
    "1",
    "12",
    "2",
    ".",
    "-",
    "--",
    "\\0",
    "\x01",
    "\x1f",
    "\x7f",
    "é",
    "猫",
    "🙂",
    "\u2028",
    "\u200b",
    "\ufeff",
    " --hw 1:12",
    " --hw 11:2",
    " --ar 1:2",
    " --ar 2:4",
    "\\x00",
]
"""What the random prompts of the derived-id property are made of: near-collisions of text, flags and
separators."""
ID_NEGATIVES = [None, "", " ", "a", "cat", "\x01", " --hw 1:12", "\\0", "猫 🙂", "a\tb", ",", "--ar 1:2"]
ID_SIZES = [None, (12, 1), (2, 11), (1, 12), (64, 64), (2**31 - 1, 1), "1:2", "2:4", " 1:2 ", "1.5:1", "3:2"]
ID_TWINS = [
    {"prompt": "a cat\x01blurry"},
    {"prompt": "a cat", "negative_prompt": "\x01blurry"},
    {"prompt": "a cat", "negative_prompt": "blurry"},
    {"prompt": "a cat --hw 12:1"},
    {"prompt": "a cat", "width": 1, "height": 12},
    {"prompt": "a cat --hw 1:21"},
    {"prompt": "a cat --hw 1:2", "negative_prompt": "1"},
    {"prompt": "a cat", "negative_prompt": " --hw 64:64"},
    {"prompt": "a cat", "width": 64, "height": 64},
]
"""Cross-format twins: the same request as a flag, as columns, with a negative prompt (only the 4th and
5th are one request)."""


def random_requests(seed: int, count: int) -> tuple[list[dict], list[str]]:
    """``count`` random JSONL rows that parse (prompt, a size unless the prompt has one, a negative half
    the time) and the prompts of those that fit on a line of a .txt file."""
    import random

    rng = random.Random(seed)

    def text() -> str:
        return "".join(rng.choice(ID_PIECES) for _ in range(rng.randint(1, 5)))

    rows: list[dict] = []
    lines: list[str] = []
    while len(rows) < count:
        prompt = text()
        try:
            _, width, _, ratio = parse_prompt_line(prompt, "x")
        except PromptFileError:
            continue
        row: dict = {"prompt": prompt}
        size = rng.choice(ID_SIZES) if width is None and ratio is None else None
        if isinstance(size, tuple):
            row["width"], row["height"] = size
        elif size is not None:
            row["aspect_ratio"] = size
        negative = rng.choice(ID_NEGATIVES) if rng.random() < 0.5 else text()
        if negative is not None:
            row["negative_prompt"] = negative
        rows.append(row)
        if "\n" not in prompt and "\r" not in prompt:
            lines.append(prompt)
    return rows, lines


def test_distinct_records_get_distinct_derived_ids(tmp_path):
    """Property: across formats and files, equal base ids (``-N`` dropped) mean equal records."""
    rows, lines = random_requests(1234, 400)
    files = [write_jsonl(tmp_path, rows, "r.jsonl"), write(tmp_path, "r.txt", "\n".join(lines) + "\n")]
    # Cross-format twins: the same request as a flag, as columns, with a negative prompt.
    files.append(write_jsonl(tmp_path, ID_TWINS, "twins.jsonl"))
    seen: dict[str, tuple] = {}
    total = 0
    for path in files:
        for r in read_prompts(path):
            total += 1
            base = r.prompt_id.split("-")[0]
            request = (r.prompt, r.negative_prompt, r.width, r.height, r.aspect_ratio)
            assert seen.setdefault(base, request) == request, (r.source, request, seen[base])
    assert total > 600 and len(seen) > 300
    twins = [r.prompt_id.split("-")[0] for r in read_prompts(files[-1])]
    assert len(set(twins)) == len(twins) - 1 and twins[4] == twins[3]  # columns == flag, the rest differ


# --------------------------------------------------------------------------- deep JSON, sizes beyond 32 bits


def test_deeply_nested_json_is_one_line_error(tmp_path):
    for rows in (["[" * 100_000], ['{"prompt": "a", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"]):
        path = write_jsonl(tmp_path, [{"prompt": "ok"}, *rows])
        expect_error(path, ":2", r"JSON nested too deeply \(arrays/objects inside each other\) to read$")
    path = write_jsonl(tmp_path, ['{"prompt": "a", "width": ' + "[" * 500 + "]" * 500 + ', "height": 1}'])
    expect_error(path, ":1", r"'width' must be a positive integer \(got 'a list'\)$")


def test_huge_json_integer_is_one_line_error(tmp_path):
    path = write_jsonl(tmp_path, ['{"prompt": "a", "width": ' + "9" * 5000 + ', "height": 64}'])
    expect_error(path, ":1", r"cannot read JSON \(Exceeds the limit \(4300 digits\)")


TOO_LARGE = r"is too large \(got '[^']*'\); sizes are at most 2147483647 pixels per side$"


@pytest.mark.parametrize(
    "line",
    [
        "a --hw 2147483648:64",
        "a --hw 64:99999999999",
        "a --hw " + "9" * 5000 + ":1",
        "a --hw 000" + "9" * 20 + ":1",
    ],
)
def test_hw_flag_beyond_32_bits(tmp_path, line):
    expect_error(write(tmp_path, "p.txt", f"ok\n{line}\n"), ":2", "--hw " + TOO_LARGE)


@pytest.mark.parametrize(
    ("key", "value"),
    [("width", 2**31), ("height", 2**63), ("width", 1e300), ("height", "99999999999"), ("width", "9" * 5000)],
)
def test_jsonl_size_beyond_32_bits(tmp_path, key, value):
    row = {"prompt": "a", "width": 64, "height": 64, key: value}
    expect_error(write_jsonl(tmp_path, [row]), ":1", f"'{key}' " + TOO_LARGE)


def test_table_sizes_beyond_32_bits(tmp_path):
    expect_error(
        write(tmp_path, "p.csv", "prompt,width,height\na,64,2147483648\n"), ":2", "'height' " + TOO_LARGE
    )
    expect_error(
        write(tmp_path, "q.csv", f"prompt,width,height\na,{'9' * 5000},1\n"), ":2", "'width' " + TOO_LARGE
    )
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(
        pa.table({"prompt": ["a", "b"], "width": [64, 2**40], "height": [64, 64]}), tmp_path / "p.parquet"
    )
    expect_error(tmp_path / "p.parquet", ":row 2", "'width' " + TOO_LARGE)
    pq.write_table(pa.table({"prompt": ["a"], "width": [2.0**31], "height": [64.0]}), tmp_path / "q.parquet")
    expect_error(tmp_path / "q.parquet", ":row 1", "'width' " + TOO_LARGE)


def test_largest_size_fits_int32(tmp_path):
    records = read_prompts(
        write(tmp_path, "p.csv", "prompt,width,height\na,2147483647,0002147483647\nb --hw 2147483647:1,,\n")
    )
    assert [(r.width, r.height) for r in records] == [(2**31 - 1, 2**31 - 1), (1, 2**31 - 1)]
    pytest.importorskip("pyarrow")
    from pixart_batch.expansion import prompt_chunk

    assert prompt_chunk(records, "").column("requested_height").to_pylist() == [2**31 - 1] * 2


# --------------------------------------------------------------------------- only regular files


def _in_thread(function, timeout: float = 10.0):
    """Run ``function`` in a thread; fail (instead of hanging the suite) if it blocks."""
    import threading

    outcome: list = []

    def target():
        try:
            outcome.append(("ok", function()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(("raised", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "reading the prompt file blocked"
    return outcome[0]


NOT_REGULAR = r"not a regular file; prompt files must be regular files or object-store objects$"


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    for reader in (scan_prompts, read_prompts, lambda p: list(iter_prompts(p))):
        kind, value = _in_thread(lambda reader=reader: reader(fifo))
        assert kind == "raised" and isinstance(value, PromptFileError), value
        assert str(value) == (
            f"{fifo}: is a named pipe (FIFO), not a regular file; "
            "prompt files must be regular files or object-store objects"
        )
    link = tmp_path / "link.jsonl"
    link.symlink_to(fifo)
    kind, value = _in_thread(lambda: read_prompts(link))
    assert kind == "raised" and re.fullmatch(
        re.escape(f"{link}: is a named pipe (FIFO), ") + NOT_REGULAR, str(value)
    )


def test_directory_device_and_socket_are_refused(tmp_path):
    import os
    import socket

    (tmp_path / "d.jsonl").mkdir()
    expect_error(tmp_path / "d.jsonl", "", r"is a directory, not a prompt file$")
    expect_error(tmp_path / "d.jsonl", "", r"is a directory, not a prompt file$", reader=scan_prompts)
    if os.path.exists("/dev/null"):
        (tmp_path / "null.txt").symlink_to("/dev/null")
        expect_error(tmp_path / "null.txt", "", "is a character device, " + NOT_REGULAR)
    if hasattr(socket, "AF_UNIX") and len(str(tmp_path)) < 90:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(tmp_path / "s.csv"))
            expect_error(tmp_path / "s.csv", "", "is a socket, " + NOT_REGULAR)


def test_symlink_to_regular_file_is_fine(tmp_path):
    target = write(tmp_path, "real.txt", "a cat\n")
    (tmp_path / "link.txt").symlink_to(target)
    assert [r.prompt_id for r in read_prompts(tmp_path / "link.txt")] == [derived("a cat")]
    assert read_prompts(f"file://{target}")[0].source == f"file://{target}:1"


# ------------------------------------------------------------------- validated and staged from the same bytes

CHANGED = (
    r"the prompt file changed while the run was starting \(.+\); re-run when it is no longer being written$"
)


def test_scan_fingerprint_is_of_the_bytes_read(tmp_path):
    content = b"\xef\xbb\xbfa cat --ar 1:2\r\na dog\n"
    scan = scan_prompts(write(tmp_path, "p.txt", content))
    assert scan.fingerprint is not None
    assert (scan.fingerprint.bytes_read, scan.fingerprint.file_size) == (len(content), len(content))
    assert scan.fingerprint.sha256 == hashlib.sha256(content).hexdigest()
    assert scan_prompts(write(tmp_path, "q.txt", content)).fingerprint == scan.fingerprint


def test_file_appended_between_scan_and_staging_is_refused(tmp_path):
    path = write(tmp_path, "p.txt", "a cat\na dog\n")
    scan = scan_prompts(path)
    assert [r.prompt for r in iter_prompts(path, scan)] == ["a cat", "a dog"]  # unchanged: fine
    with path.open("a") as handle:
        handle.write("a dog\n")  # would be a second "a dog" without "-1": a duplicate key
    message = expect_error(path, "", CHANGED, reader=lambda p: iter_prompts(p, scan))
    assert "(it has 18 bytes, 12 when it was checked)" in message
    # Refused before the first record, not after staging some.
    with pytest.raises(PromptFileError, match=CHANGED):
        next(iter(iter_prompts(path, scan)))


def test_file_changed_during_staging_is_refused(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"prompt": "a cat"}\n{"prompt": "a dog"}\n')
    scan = scan_prompts(path)
    records = iter_prompts(path, scan)
    assert next(records).prompt == "a cat"
    with path.open("a") as handle:
        handle.write('{"prompt": "a dog"}\n' * 100)
    with pytest.raises(PromptFileError, match=re.escape(f"{path}: ") + CHANGED) as info:
        list(records)
    assert "more than the 40 bytes that were checked" in str(info.value)
    # Same size, other bytes: refused when the pass ends.
    path = write(tmp_path, "q.txt", "a cat\na dog\n")
    scan = scan_prompts(path)
    write(tmp_path, "q.txt", "a cat\na cow\n")
    message = expect_error(path, "", CHANGED, reader=lambda p: iter_prompts(p, scan))
    assert "its bytes differ from the ones that were checked" in message
    # Shrunk: refused.
    path = write(tmp_path, "r.csv", "prompt\na\nb\n")
    scan = scan_prompts(path)
    write(tmp_path, "r.csv", "prompt\na\n")
    expect_error(path, "", CHANGED, reader=lambda p: iter_prompts(p, scan))


def test_parquet_changed_between_scan_and_staging_is_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": [f"p {i}" for i in range(5000)]}), path, row_group_size=1000)
    scan = scan_prompts(path)
    assert scan.fingerprint is not None and scan.fingerprint.bytes_read > 0
    assert len(list(iter_prompts(path, scan))) == 5000
    pq.write_table(pa.table({"prompt": [f"q {i}" for i in range(5000)]}), path, row_group_size=1000)
    expect_error(path, "", CHANGED, reader=lambda p: iter_prompts(p, scan))


def test_object_store_uri_fingerprint(tmp_path, monkeypatch):
    """``s3://`` and other URIs go through pyarrow.fs; here a local filesystem stands in."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from pyarrow import fs

    class FakeS3:
        @staticmethod
        def from_uri(uri):
            assert uri.startswith("s3://bucket/")
            return fs.LocalFileSystem(), str(tmp_path / uri.removeprefix("s3://bucket/"))

    write(tmp_path, "p.txt", "a cat\na dog\n")
    pq.write_table(pa.table({"prompt": ["a cat", "a dog"]}), tmp_path / "p.parquet")
    monkeypatch.setattr(fs, "FileSystem", FakeS3)
    for name in ("p.txt", "p.parquet"):
        uri = f"s3://bucket/{name}"
        scan = scan_prompts(uri)
        fingerprint = scan.fingerprint
        assert fingerprint is not None and fingerprint.mtime_ns is not None
        assert fingerprint.file_size is not None and fingerprint.file_size > 0
        assert [r.prompt for r in iter_prompts(uri, scan)] == ["a cat", "a dog"]
    scan = scan_prompts("s3://bucket/p.txt")
    write(tmp_path, "p.txt", "a cat\na cow\n")  # same size: the modification time tells
    expect_error("s3://bucket/p.txt", "", CHANGED, reader=lambda p: iter_prompts(p, scan))
    scan = scan_prompts("s3://bucket/p.txt")
    import os

    assert scan.fingerprint is not None and scan.fingerprint.mtime_ns is not None
    os.utime(tmp_path / "p.txt", ns=(scan.fingerprint.mtime_ns + 10**9,) * 2)  # rewritten, same bytes
    message = expect_error("s3://bucket/p.txt", "", CHANGED, reader=lambda p: iter_prompts(p, scan))
    assert "its modification time differs from when it was checked" in message
    expect_error("s3://bucket/none.txt", "", r"no such file$")
    (tmp_path / "dir.txt").mkdir()
    expect_error("s3://bucket/dir.txt", "", r"is a directory, not a prompt file$")
