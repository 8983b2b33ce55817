"""``pixart-batch gallery``: files, escaping of hostile prompts, the deterministic stratified sample,
refusals, an empty output, S3, and a real browser (headless Chromium) loading the pages."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_config
from PIL import Image, ImageStat

from pixart_batch.cli import main

pytestmark = pytest.mark.slow

HOSTILE = '<script>alert("pwned")</script> a red fox'
ATTRIBUTE = '"><img src=x onerror=alert(1)> a blue house'
UNICODE = "un café « très » chaud 🍵 — ünïcödé 東京"
LONG = "a very long prompt " + "and more words " * 400
PROMPTS = [
    "a lighthouse on a cliff",
    "a tall tower --ar 1:2",
    HOSTILE,
    ATTRIBUTE,
    UNICODE,
    LONG.strip(),
    "a cat --hw 96:160",
]


ALLOWED_TAGS = set("html head meta title style body h1 h2 p a div input span nav table tr th td".split())
ALLOWED_TAGS |= set("figure img script select option label button code b".split())


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


class Page(HTMLParser):
    """Tags, attributes and the text of each ``<p class=...>`` of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "p" and attributes.get("class"):
            self._in = attributes["class"]
            self.texts.setdefault(self._in, []).append("")

    def handle_endtag(self, tag):
        if tag == "p":
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self.texts[self._in][-1] += data

    def keys(self) -> list[str]:
        return [key for tag, a in self.tags if tag == "figure" and (key := a.get("data-key"))]


def _value(attributes: dict[str, str | None], name: str) -> str:
    """The value of attribute ``name`` (which must be there, with a value)."""
    value = attributes[name]
    assert value is not None, f"{name} has no value"
    return value


def _shard_rows(output: Path, columns: list[str]) -> list[dict]:
    rows: list[dict] = []
    for path in sorted((output / "data").rglob("*.parquet")):
        rows += pq.read_table(path, columns=columns).to_pylist()
    return rows


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _make_output(root: Path, name: str, **overrides) -> Path:
    """A real output of the tiny checkpoint (in-process executor) with a gallery: 14 images, 3 buckets,
    several shards."""
    from pixart_batch.run import run_generate

    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    config = tiny_config(
        **{
            "ray.executor": "local",
            "generation.images_per_prompt": 2,
            "generation.num_inference_steps": 2,
            "output.rows_per_shard": 4,
            **overrides,
        }
    )
    output = root / name
    run_generate(config, str(prompts), str(output))
    assert main(["gallery", str(output)]) == 0
    return output


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model):
    return _make_output(tmp_path_factory.mktemp("gallery"), "out", **{"output.row_group_size": 2})


def test_files_cards_and_thumbnails(made):
    gallery = made / "gallery"
    rows = _shard_rows(made, ["key", "prompt", "seed", "width", "height", "bucket_width", "bucket_height"])
    assert len(rows) == 14
    buckets = {f"{r['bucket_width']}x{r['bucket_height']}" for r in rows}
    assert len(buckets) == 3
    pages = ["index.html", "all.html", *(f"bucket-{b}.html" for b in buckets)]
    assert sorted(p.name for p in gallery.glob("*.html")) == sorted(pages)
    plots = sorted(p.name for p in (gallery / "plots").iterdir())
    assert plots == ["buckets.svg"]  # no labels, scores or failures
    thumbs = sorted(p.name for p in (gallery / "thumbs").iterdir())
    assert thumbs == sorted(f"{r['key']}.webp" for r in rows)
    for name in thumbs:
        with Image.open(gallery / "thumbs" / name) as image:
            assert image.format == "WEBP" and max(image.size) <= 256
    for row in rows:
        page = (gallery / f"bucket-{row['bucket_width']}x{row['bucket_height']}.html").read_text(
            encoding="utf-8"
        )
        parsed = Page(page)
        assert row["key"] in parsed.keys()
        assert f"{row['key']} · seed {row['seed']} · {row['width']}x{row['height']}" in parsed.texts["meta"]
        assert f'src="thumbs/{row["key"]}.webp"' in page
    index = (gallery / "index.html").read_text(encoding="utf-8")
    assert "Settings (settings.json)" in index and "checkpoint" in index
    for bucket in buckets:
        assert f'href="bucket-{bucket}.html"' in index
    assert 'src="plots/buckets.svg"' in index
    all_keys = Page((gallery / "all.html").read_text(encoding="utf-8")).keys()
    assert sorted(all_keys) == sorted(r["key"] for r in rows)
    # Self-contained: no absolute or remote reference anywhere (pages and plots).
    for plot in (gallery / "plots").iterdir():
        svg = plot.read_text(encoding="utf-8")
        assert svg.startswith("<?xml") and "<svg" in svg and not re.search(r"(href|src)=\"(https?:|//)", svg)
    for page in gallery.glob("*.html"):
        for tag, attributes in Page(page.read_text(encoding="utf-8")).tags:
            for name in ("src", "href"):
                value = attributes.get(name)
                assert value is None or not re.match(r"^([a-z]+:|/)", value), (page.name, tag, value)


def test_a_webdataset_output_gets_the_same_gallery(made, tmp_path, tiny_model):
    """The gallery reads shards through the output's format: WebDataset tars give the same cards."""
    output = _make_output(tmp_path, "wds", **{"output.format": "webdataset"})
    assert list((output / "data").rglob("*.tar"))
    thumbs = sorted(p.name for p in (output / "gallery" / "thumbs").iterdir())
    assert thumbs == sorted(p.name for p in (made / "gallery" / "thumbs").iterdir())  # the same 14 images
    for page in (made / "gallery").glob("bucket-*.html"):  # the same cards (in the order of their row groups)
        assert sorted(Page((output / "gallery" / page.name).read_text(encoding="utf-8")).keys()) == sorted(
            Page(page.read_text(encoding="utf-8")).keys()
        )


def test_hostile_prompts_are_escaped(made):
    pages = {p.name: p.read_text(encoding="utf-8") for p in (made / "gallery").glob("*.html")}
    shown: list[str] = []
    for name, page in pages.items():
        assert "<script>alert" not in page and "<img src=x" not in page, name
        parsed = Page(page)
        scripts = [attributes.get("type") for tag, attributes in parsed.tags if tag == "script"]
        # The page's data (JSON, never run) and its own script only.
        assert scripts == ["application/json", None], name
        for tag, attributes in parsed.tags:
            assert not any(attr.startswith("on") for attr in attributes), (name, tag, attributes)
            assert tag in ALLOWED_TAGS, (name, tag)
        shown += parsed.texts.get("prompt clamp", []) + parsed.texts.get("cap clamp", [])
    assert HOSTILE in shown and ATTRIBUTE in shown and UNICODE in shown
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in "".join(pages.values())
    long = [text for text in shown if text.startswith("a very long prompt")]
    assert long and all(
        text.endswith(f"… ({len(LONG.strip())} characters)") and len(text) < 2100 for text in long
    )


def test_rerun_is_identical_and_a_smaller_sample_removes_stale_files(made, tmp_path, capsys):
    output = tmp_path / "out"
    shutil.copytree(made, output)
    assert main(["gallery", str(output)]) == 0
    before = _snapshot(output / "gallery")
    assert main(["gallery", str(output)]) == 0
    assert _snapshot(output / "gallery") == before  # deterministic, byte for byte
    assert main(["gallery", str(output), "--per-bucket", "1", "--max-images", "2", "--format", "jpeg"]) == 0
    assert "gallery: 2 of 14 images in 3 buckets" in capsys.readouterr().out
    thumbs = sorted((output / "gallery" / "thumbs").iterdir())
    assert len(thumbs) == 2 and all(p.suffix == ".jpg" for p in thumbs)
    keys = [
        key
        for page in sorted((output / "gallery").glob("bucket-*.html"))
        for key in Page(page.read_text()).keys()
    ]
    assert sorted(f"{k}.jpg" for k in keys) == [p.name for p in thumbs]
    assert (
        len(list((output / "gallery").glob("bucket-*.html"))) == 3
    )  # every bucket keeps its page (and count)
    assert not [p for p in output.rglob(".tmp-*")]


# --- the sample, on synthetic outputs (no model) ------------------------------------------------

SIZES = {(256, 256): 700, (352, 176): 300, (176, 352): 3}


def _synthetic(root: Path, layout: int) -> Path:
    """An output with 1003 tiny rows in 3 buckets; ``layout`` changes how rows are split and ordered
    across shards and row groups (never which rows there are)."""
    from pixart_batch.ownership import write_marker
    from pixart_batch.storage import locate

    png = {}
    for size in SIZES:
        out = io.BytesIO()
        Image.new("RGB", (size[0] // 8, size[1] // 8), (size[0] % 255, 80, size[1] % 255)).save(out, "PNG")
        png[size] = out.getvalue()
    rows = [
        {
            "key": f"p{size[0]:03d}{size[1]:03d}{i:012d}-00000",
            "prompt": f"prompt {i}",
            "caption": f"caption {i}",
            "seed": i,
            "width": size[0] // 8,
            "height": size[1] // 8,
            "bucket_width": size[0],
            "bucket_height": size[1],
            "image": {"bytes": png[size], "path": f"{i}.png"},
        }
        for size, count in SIZES.items()
        for i in range(count)
    ]
    rows = rows[layout::2] + rows[1 - layout :: 2] if layout else rows
    per_shard, group = (97, 13) if layout else (250, 50)
    output = root / f"synthetic-{layout}"
    output.mkdir()
    write_marker(locate(str(output)))
    for n, start in enumerate(range(0, len(rows), per_shard)):
        path = output / "data" / "run" / "0000" / f"train-run-{n:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows[start : start + per_shard]), path, row_group_size=group)
    return output


def _shown(output: Path) -> dict[str, list[str]]:
    return {
        p.name.removeprefix("bucket-").removesuffix(".html"): Page(p.read_text(encoding="utf-8")).keys()
        for p in sorted((output / "gallery").glob("bucket-*.html"))
    }


def _ranked(output: Path) -> dict[str, list[str]]:
    """Per bucket, every key in the gallery's rank order: (sha256 of "<shard under data/>#<row group>",
    sha256 of the key)."""
    found: dict[str, list[tuple[int, int, str]]] = {}
    data = output / "data"
    for path in sorted(data.rglob("*.parquet")):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.metadata.num_row_groups):
            ghash = _hash(f"{path.relative_to(data).as_posix()}#{group}")
            table = parquet.read_row_group(group, columns=["key", "bucket_width", "bucket_height"])
            for row in table.to_pylist():
                bucket = f"{row['bucket_width']}x{row['bucket_height']}"
                found.setdefault(bucket, []).append((ghash, _hash(row["key"]), row["key"]))
    return {bucket: [key for *_, key in sorted(entries)] for bucket, entries in found.items()}


def test_sample_is_stratified_capped_and_by_row_groups(tmp_path):
    for layout in (0, 1):
        output = _synthetic(tmp_path, layout)
        assert (
            main(["gallery", str(output), "--per-bucket", "10", "--max-images", "20", "--thumb-size", "16"])
            == 0
        )
        shown = _shown(output)
        counts = {name: len(keys) for name, keys in shown.items()}
        assert sum(counts.values()) == 20 and counts["176x352"] == 3  # the small bucket shows all it has
        assert (
            max(counts.values()) <= 10 and abs(counts["256x256"] - counts["352x176"]) <= 1
        )  # handed out rank by rank
        ranked = _ranked(output)
        for name, keys in shown.items():
            assert keys == ranked[name][: len(keys)]  # the smallest ranks, in order
        # The images come from the row groups of smallest hash: few of them, whatever the layout.
        groups = {
            (path, group)
            for path in (output / "data").rglob("*.parquet")
            for group in range(pq.ParquetFile(path).metadata.num_row_groups)
            if set(pq.ParquetFile(path).read_row_group(group, columns=["key"]).column(0).to_pylist())
            & {key for keys in shown.values() for key in keys}
        }
        assert len(groups) <= 6, groups
    # The defaults cap at 48 per bucket.
    first = tmp_path / "synthetic-0"
    assert main(["gallery", str(first)]) == 0
    assert {name: len(keys) for name, keys in _shown(first).items()} == {
        "256x256": 48,
        "352x176": 48,
        "176x352": 3,
    }
    index = (first / "gallery" / "index.html").read_text()
    assert "1003 images in 3 buckets · 99 shown" in index


def test_unreadable_shard_is_left_out(tmp_path, capsys):
    output = _synthetic(tmp_path, 0)
    damaged = sorted((output / "data").rglob("*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert main(["gallery", str(output), "--thumb-size", "16"]) == 0
    captured = capsys.readouterr()
    assert f"unreadable shard left out of the gallery: {damaged}" in captured.err
    assert "1 unreadable shards were left out" in (output / "gallery" / "index.html").read_text()
    assert "of 753 images in 3 buckets" in captured.out


# --- refusals and the empty output --------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--per-bucket", "0"], "--per-bucket 0: must be at least 1"),
        (["--max-images", "-1"], "--max-images -1: must be at least 1"),
        (["--thumb-size", "8"], "--thumb-size 8: must be between 16 and 2048 pixels"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, flags, message):
    output = _synthetic(tmp_path, 0)
    assert main(["gallery", str(output), *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"pixart-batch: error: {message}\n"
    assert not (output / "gallery").exists()


def test_refuses_a_directory_that_is_not_an_output(tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.txt").write_text("mine")
    before = _snapshot(foreign)
    assert main(["gallery", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"pixart-batch: error: {foreign}: not a pixart-batch output"
    )
    assert _snapshot(foreign) == before and not (foreign / "gallery").exists()
    missing = tmp_path / "nothing-here"
    assert main(["gallery", str(missing)]) == 2
    assert not missing.exists()


def test_empty_output_says_so(tmp_path, capsys):
    from pixart_batch.ownership import write_marker
    from pixart_batch.storage import locate

    output = tmp_path / "new"
    output.mkdir()
    write_marker(locate(str(output)))
    assert main(["gallery", str(output)]) == 0
    assert "gallery: 0 of 0 images in 0 buckets" in capsys.readouterr().out
    index = (output / "gallery" / "index.html").read_text()
    assert "No images yet" in index
    assert sorted(p.name for p in (output / "gallery").iterdir()) == ["index.html"]


def test_s3_output(tmp_path, monkeypatch):
    from helpers import s3_server

    with s3_server("pixart") as (client, env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        local = _synthetic(tmp_path, 1)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            client.put_object(Bucket="pixart", Key=f"out/{path.relative_to(local)}", Body=path.read_bytes())
        assert main(["gallery", "s3://pixart/out", "--per-bucket", "5", "--thumb-size", "16"]) == 0
        listed = client.list_objects_v2(Bucket="pixart", Prefix="out/gallery/")["Contents"]
        names = sorted(obj["Key"].removeprefix("out/gallery/") for obj in listed)
        assert [n for n in names if n.endswith(".html")] == [
            "all.html",
            "bucket-176x352.html",
            "bucket-256x256.html",
            "bucket-352x176.html",
            "index.html",
        ]
        assert len([n for n in names if n.startswith("thumbs/")]) == 13
        assert main(["gallery", "s3://pixart/nothing"]) == 2


# --- a real browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); under CI=true this test fails instead")


def _browser(chromium: str, tmp_path: Path, *arguments: str) -> str:
    profile = tmp_path / "chromium-profile"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _body(dom: str) -> dict[str, str | None]:
    return next(attributes for tag, attributes in Page(dom).tags if tag == "body")


def test_browser_screenshot_is_not_blank(made, chromium, tmp_path):
    shot = tmp_path / "index.png"
    url = (made / "gallery" / "index.html").as_uri()
    _browser(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,900", url)
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1200, 900)
        assert len(rgb.getcolors(maxcolors=1 << 20) or ()) > 100
        assert max(ImageStat.Stat(rgb).stddev) > 20


def test_browser_loads_every_thumbnail(made, chromium, tmp_path):
    for page in sorted((made / "gallery").glob("*.html")):
        dom = _browser(chromium, tmp_path, "--dump-dom", page.as_uri())
        body = _body(dom)
        cards = len(Page(page.read_text(encoding="utf-8")).keys())
        assert body.get("data-images-broken") == "0", page.name
        assert body.get("data-card-images-loaded") == str(cards) and cards > 0, page.name
        plots = 1 if page.name == "index.html" else 0  # images per bucket
        assert body.get("data-images-loaded") == str(cards + plots), page.name
        # The index's filter counts every image its buckets show, not its sample strip.
        shown = 14 if page.name == "index.html" else cards
        assert body.get("data-visible") == str(shown), page.name


def test_browser_text_filter(made, chromium, tmp_path):
    rows = _shard_rows(made, ["key", "prompt", "bucket_width", "bucket_height"])
    lighthouse = [r for r in rows if "lighthouse" in r["prompt"]]
    assert len(lighthouse) == 2
    page = made / "gallery" / f"bucket-{lighthouse[0]['bucket_width']}x{lighthouse[0]['bucket_height']}.html"
    for query in ("lighthouse", "LIGHTHOUSE%20cliff"):
        dom = _browser(chromium, tmp_path, "--dump-dom", page.as_uri() + "#q=" + query)
        assert _body(dom).get("data-visible") == "2"
        visible = [
            _value(a, "data-key") for tag, a in Page(dom).tags if tag == "figure" and "hidden" not in a
        ]
        assert sorted(visible) == sorted(r["key"] for r in lighthouse)
    dom = _browser(chromium, tmp_path, "--dump-dom", page.as_uri() + "#q=no-such-words-anywhere")
    assert _body(dom).get("data-visible") == "0"
    assert all("hidden" in a for tag, a in Page(dom).tags if tag == "figure")


def test_browser_index_filter_counts_every_shown_image(made, chromium, tmp_path):
    index = made / "gallery" / "index.html"
    dom = _browser(chromium, tmp_path, "--dump-dom", index.as_uri() + "#q=lighthouse")
    assert (
        _body(dom).get("data-visible") == "2"
    )  # both lighthouse images, whether or not the strip shows them
    assert "of 14 shown images match" in index.read_text(encoding="utf-8")


def test_cards_label_caption_and_prompt_and_keep_numbers_whole():
    from pixart_batch.gallery import Card, View, card_html
    from pixart_batch.gallery.assets import CSS

    view = View("out")
    card = Card("k1", prompt="a cat", caption="a cat", seed=1234567890123456789, width=256, height=256)
    same = card_html(card, view, 0)
    assert same.count('class="cap clamp"') == 1 and 'class="prompt' not in same  # the prompt when it differs
    assert '<span class="num">seed 1234567890123456789</span>' in same
    differs = card_html(Card("k2", prompt="A CAT!!", caption="a cat", seed=1, width=256, height=256), view, 0)
    assert '<p class="cap clamp">a cat</p>\n<p class="prompt clamp">A CAT!!</p>' in differs
    assert 'content:"caption"' in CSS and 'content:"prompt"' in CSS and "white-space:nowrap" in CSS
    # Long texts are clamped (no scroll box of their own), a "more" button shown by the script when cut.
    assert "-webkit-line-clamp:4" in CSS and "overflow:auto" not in CSS and "max-height" not in CSS
    assert '<button type="button" class="more" hidden>more</button>' in differs


def test_settings_are_readable_values():
    from pixart_batch.gallery import View, readable
    from pixart_batch.gallery.pages import Overview, index_page

    assert readable(None) == "—" and readable("PixArt-alpha/x") == "PixArt-alpha/x"
    assert readable(["cat", "dog"]) == "cat, dog" and readable(True) == "yes" and readable(4.5) == "4.5"
    assert readable({"a": 1, "b": None}) == "a: 1; b: —"
    assert readable("") == "(empty)"
    page = index_page(Overview(View("out"), 0, {}, settings={"checkpoint": "tiny", "revision": None}), [])
    assert (
        "<td>tiny</td>" in page
        and "<td>—</td>" in page
        and "<td>null" not in page
        and "&quot;tiny&quot;" not in page
    )
