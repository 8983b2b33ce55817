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
        ("https://example.com/x.png?a=1&b=2 --ar 1:1", ("https://example.com/x.png?a=1&b=2", None, None, 1.0)),
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
    inserted = read_prompts(write(tmp_path, "c.txt", "\n".join(["new first"] + base[:2] + ["\n", "new"] + base[2:])))
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
    as_columns = read_prompts(write_jsonl(tmp_path, [{"prompt": "a cat", "width": 96, "height": 64}], "c.jsonl"))
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
    assert cat == PromptRecord("cat-01", "a cat sitting on a mat", "blurry, low quality", 64, 96, None, f"{path}:1")
    assert (dog.prompt_id, dog.width, dog.height, dog.negative_prompt) == ("dog_02", 96, 64, None)
    assert (fruit.prompt_id, fruit.negative_prompt) == ("3", "")
    assert (lighthouse.prompt, lighthouse.aspect_ratio, lighthouse.width) == ("a lighthouse at dusk", 4 / 3, None)
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
    ('{"prompt": "a", ', r"not valid JSON \(Expecting property name enclosed in double quotes at column 16\)"),
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
    ('{"prompt": "a", "id": "n", "negative_prompt": "\\udfff"}', r"text contains an unpaired surrogate escape"),
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
    path = write_jsonl(tmp_path, [{"id": "x", "prompt": "a"}, {"prompt": "b"}, "", {"id": "x", "prompt": "c"}])
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
    expect_error(path, ":2", rf"id '{taken}' derived from the text at line 2 equals the explicit id at line 1")


def test_mixed_explicit_and_derived_ids(tmp_path):
    records = read_prompts(write_jsonl(tmp_path, [{"id": "a", "prompt": "x"}, {"prompt": "x"}, {"prompt": "x"}]))
    assert [r.prompt_id for r in records] == ["a", derived("x"), derived("x") + "-1"]


# --------------------------------------------------------------------------- csv


def test_csv_quoting_newlines_and_line_numbers(tmp_path):
    content = (
        "id,prompt,negative_prompt,width,height,notes\n"
        'a1,"a cat, sitting",blurry,64,96,whatever\n'
        '\n'
        ',"a two-line\nprompt --ar 1:2",,,,\n'
        ',,,,,\n'
        'b2, "quoted ""word"" here","",80.0, 80 ,\n'
        ',<b>bold</b> &amp; text,,,,\n'
    )
    path = write(tmp_path, "p.csv", content)
    records = read_prompts(path)
    assert records == [
        PromptRecord("a1", "a cat, sitting", "blurry", 64, 96, None, f"{path}:2"),
        PromptRecord(derived("a two-line\nprompt --ar 1:2"), "a two-line\nprompt", None, None, None, 0.5, f"{path}:4"),
        PromptRecord("b2", 'quoted "word" here', None, 80, 80, None, f"{path}:7"),
        PromptRecord(derived("<b>bold</b> &amp; text"), "<b>bold</b> &amp; text", None, None, None, None, f"{path}:8"),
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
    expect_error(path, "", r"no 'prompt' column \(columns: id, text, width\)$")


def test_csv_repeated_column(tmp_path):
    path = write(tmp_path, "p.csv", "prompt,prompt\na,b\n")
    expect_error(path, "", r"column 'prompt' appears more than once$")


def test_csv_empty_and_header_only(tmp_path):
    expect_error(write(tmp_path, "a.csv", ""), "", r"no prompts \(file is empty\)$")
    expect_error(write(tmp_path, "b.csv", "prompt,id\n\n,\n"), "", r"no prompts \(no rows after the header\)$")


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
    assert records[0] == PromptRecord(derived("prompt 0\0ugly"), "prompt 0", "ugly", None, None, None, f"{path}:row 1")
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
    expect_error(parquet("f.parquet", {"text": ["a"], "id": [1]}), "", r"no 'prompt' column \(columns: text, id\)$")
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


# --------------------------------------------------------------------------- paths and messages


def test_unsupported_extension_fails_at_once(tmp_path):
    path = write(tmp_path, "p.json", '{"prompt": "a"}')
    for reader in (read_prompts, iter_prompts):
        with pytest.raises(PromptFileError) as info:
            reader(path)  # no iteration needed
        assert str(info.value) == (
            f"{path}: unsupported prompt file type '.json'; use one of .txt, .jsonl, .ndjson, .csv, .parquet"
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
