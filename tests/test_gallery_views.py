"""The gallery of a labelled, scored output: cards that say what a row is, per-label pages, the
export preview (``--where``), the plots (matplotlib SVG, imported by the gallery only), hostile class
names and captions escaped on every page, what each pass reads, and a real browser sorting and
filtering (headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_config
from test_gallery import ALLOWED_TAGS, LONG, Page, _body, _browser, _snapshot

from pixart_batch import schema as S
from pixart_batch.cli import main

pytestmark = pytest.mark.slow

NAMES = [
    '<script>alert("label")</script>',
    "</script><img src=x onerror=alert(2)>",
    "quote \"double\" & 'single' $x^2$ \\u2028",
    "café 東京 🍵\nsecond line",
]
PROMPTS = [
    "a lighthouse on a cliff",
    "a tall tower --ar 1:2",
    '</script><script>alert("caption")</script> a red fox',
    '"><img src=x onerror=alert(1)> a blue house',
    "un café « très » chaud 🍵 — 東京\u2028line",
    LONG.strip(),
    "a cat --hw 96:160",
]
WHERE = "clip_score >= 27"


def _score(i: int) -> float | None:
    return None if i == 5 else 20.0 + (i * 7) % 15 + i * 0.01


def _rows(output: Path) -> list[dict]:
    columns = ["key", "label", "clip_score", "aesthetic_score", "bucket_width", "bucket_height"]
    paths = sorted((output / "data").rglob("*.parquet"))
    return [row for path in paths for row in pq.read_table(path, columns=columns).to_pylist()]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_model):
    """A real output (in-process executor, 14 images, row groups of 2) whose shards get ``label`` (hostile
    class names), ``clip_score`` (one null) and ``aesthetic_score``, and two failed images."""
    from datasets import ClassLabel, Features, Value

    from pixart_batch.output import OutputDataset
    from pixart_batch.run import run_generate

    root = tmp_path_factory.mktemp("views")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    output = root / "out"
    overrides = {"ray.executor": "local", "generation.images_per_prompt": 2, "output.rows_per_shard": 4}
    overrides |= {"generation.num_inference_steps": 2, "output.row_group_size": 2}
    run_generate(tiny_config(**overrides), str(prompts), str(output))
    index = 0
    for path in sorted((output / "data").rglob("*.parquet")):
        table = pq.read_table(path)
        rows = range(index, index + table.num_rows)
        index += table.num_rows
        features = Features({**Features.from_arrow_schema(table.schema), S.LABEL: ClassLabel(names=NAMES)})
        features[S.CLIP_SCORE] = Value("float32")
        features[S.AESTHETIC_SCORE] = Value("float32")
        features[S.IMAGE] = features.pop(S.IMAGE)
        table = table.append_column(S.LABEL, pa.array([i % len(NAMES) for i in rows], pa.int64()))
        table = table.append_column(S.CLIP_SCORE, pa.array([_score(i) for i in rows], pa.float32()))
        aesthetic = pa.array([3 + (i % 5) / 2 for i in rows], pa.float32())
        table = table.append_column(S.AESTHETIC_SCORE, aesthetic)
        schema = features.arrow_schema
        metadata = {**schema.metadata, S.SHARD_SETTINGS_KEY: table.schema.metadata[S.SHARD_SETTINGS_KEY]}
        table = table.select(list(features)).cast(schema.with_metadata(metadata))
        pq.write_table(table, path, row_group_size=2)
    settings = json.loads((output / "settings.json").read_text())
    (output / "settings.json").write_text(json.dumps({**settings, S.LABEL_NAMES_SETTING: NAMES}, indent=2))
    failed = [("gone-00000", "denoise: RuntimeError: out of memory")]
    failed.append(("gone-00001", "decode: ValueError: <b>x</b>"))
    failed.append((_rows(output)[0]["key"], "decode: ValueError: retried since"))  # committed: not counted
    failures = {"key": [k for k, _ in failed], "prompt_id": ["gone"] * 3, "image_index": [0, 1, 0]}
    failures |= {"error": [e for _, e in failed], "traceback": [""] * 3, "run": ["r"] * 3}
    OutputDataset(str(output)).write_failures(pa.table(failures), "failures-r-00000.parquet")
    assert main(["gallery", str(output), "--where", WHERE]) == 0
    return output


def test_pages_plots_and_the_export_preview(labelled, capsys):
    gallery = labelled / "gallery"
    rows = _rows(labelled)
    kept = [r for r in rows if r["clip_score"] is not None and r["clip_score"] >= 27]
    assert 0 < len(kept) < len(rows)
    labels = sorted({r["label"] for r in rows})
    pages = {p.name for p in gallery.glob("*.html")}
    assert {f"label-{n}.html" for n in labels} <= pages
    assert {"kept.html", "dropped.html", "all.html", "index.html"} <= pages
    assert sorted(p.name for p in (gallery / "plots").iterdir()) == sorted(
        ["buckets.svg", "labels.svg", "scores.svg", "clip_score-by-label.svg", "aesthetic_score-by-label.svg"]
        + ["failures.svg", "where.svg"]
    )
    index = (gallery / "index.html").read_text(encoding="utf-8")
    for plot in (gallery / "plots").iterdir():
        assert f'src="plots/{plot.name}"' in index
    assert f"keeps <b>{len(kept)}</b> of {len(rows)} images" in index
    kept_page = Page((gallery / "kept.html").read_text(encoding="utf-8"))
    assert sorted(kept_page.keys()) == sorted(r["key"] for r in kept)
    dropped = Page((gallery / "dropped.html").read_text(encoding="utf-8")).keys()
    assert sorted(dropped) == sorted(r["key"] for r in rows if r not in kept)
    for label in labels:
        page = Page((gallery / f"label-{label}.html").read_text(encoding="utf-8"))
        assert sorted(page.keys()) == sorted(r["key"] for r in rows if r["label"] == label)
    # Failures per stage: the two images not in the dataset (the retried one is not counted).
    assert "<h2>Failures</h2>" in index and "2 images failed" in index
    assert "<td>denoise</td><td class=n>1</td>" in index and "<td>decode</td><td class=n>1</td>" in index
    # The median of every score is marked; the per-label plot names every class (escaped as XML text).
    scores = (gallery / "plots" / "scores.svg").read_text(encoding="utf-8")
    assert "median" in scores and "clip_score" in scores and "aesthetic_score" in scores
    by_label = (gallery / "plots" / "clip_score-by-label.svg").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(" in by_label and "<script" not in by_label
    assert "café 東京 🍵 second line" in by_label
    # The CLI says what the preview keeps; a re-run writes the same bytes, plots included.
    capsys.readouterr()
    before = _snapshot(gallery)
    assert main(["gallery", str(labelled), "--where", WHERE]) == 0
    assert f"gallery: --where keeps {len(kept)} of {len(rows)} images" in capsys.readouterr().out
    assert _snapshot(gallery) == before


def _cards(page: str) -> dict[str, dict[str, list[str]]]:
    """Per card key, the texts of its chips by class, and its caption / prompt."""

    class Cards(Page):
        def __init__(self, text: str) -> None:
            self.found: dict[str, dict[str, list[str]]] = {}
            self.key: str | None = None
            self.chip: str | None = None
            super().__init__(text)

        def handle_starttag(self, tag, attrs):
            super().handle_starttag(tag, attrs)
            attributes = dict(attrs)
            if tag == "figure":
                self.key = attributes["data-key"]
                self.found[self.key] = {}
            if self.key and attributes.get("class", "").startswith(("chip", "cap", "prompt")):
                self.chip = attributes["class"]
                self.found[self.key].setdefault(self.chip, []).append("")

        def handle_endtag(self, tag):
            super().handle_endtag(tag)
            if tag in ("a", "span", "p"):
                self.chip = None

        def handle_data(self, data):
            super().handle_data(data)
            if self.key and self.chip:
                self.found[self.key][self.chip][-1] += data

    return Cards(page).found


def test_cards_say_what_a_row_is(labelled):
    rows = {r["key"]: r for r in _rows(labelled)}
    cards = _cards((labelled / "gallery" / "all.html").read_text(encoding="utf-8"))
    assert set(cards) == set(rows)
    for key, chips in cards.items():
        row = rows[key]
        assert chips["chip label"] == [NAMES[row["label"]]]  # the class name, as it is
        clip = "—" if row["clip_score"] is None else f"{row['clip_score']:.2f}"
        assert chips["chip score"] == [f"CLIP {clip}", f"aesthetic {row['aesthetic_score']:.2f}"]
        assert f"{row['bucket_width']}x{row['bucket_height']}" in chips["chip"]
        kept = row["clip_score"] is not None and row["clip_score"] >= 27
        assert chips["chip kept" if kept else "chip drop"]
        assert chips["cap clamp"]


def test_hostile_labels_and_captions_stay_escaped_on_every_page(labelled):
    gallery = labelled / "gallery"
    for path in sorted(gallery.glob("*.html")):
        text = path.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<img src=x" not in text, path.name
        parsed = Page(text)
        scripts = [a.get("type") for tag, a in parsed.tags if tag == "script"]
        assert scripts == ["application/json", None], path.name
        for tag, attributes in parsed.tags:
            assert tag in ALLOWED_TAGS, (path.name, tag)
            assert not any(name.startswith("on") for name in attributes), (path.name, tag, attributes)
        # The page's data: nothing in it can end its <script>, and it reads back to what the cards show.
        found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
        assert found and not re.search(r"[<>&\u2028\u2029]", found.group(1)), path.name
        data = json.loads(found.group(1))
        assert len(data) == len(parsed.keys()) or path.name == "index.html"
        # Class names round-trip through the label filter's options.
        options = [a for tag, a in parsed.tags if tag == "option"]
        names = [a.get("data-name") for a in options if a.get("data-name") is not None]
        assert names in ([], NAMES), path.name
    title = Page((gallery / "label-0.html").read_text(encoding="utf-8")).tags
    assert ("title", {}) in title and "label: &lt;script&gt;alert(&quot;label&quot;)&lt;/script&gt;" in (
        gallery / "label-0.html"
    ).read_text(encoding="utf-8")
    import xml.etree.ElementTree as ET

    for plot in (gallery / "plots").iterdir():
        tree = ET.fromstring(plot.read_bytes())
        tags = {element.tag.rsplit("}", 1)[-1] for element in tree.iter()}
        assert not tags & {"script", "foreignObject", "image", "a"}, (plot.name, tags)
        handlers = [k for element in tree.iter() for k in element.attrib if k.lower().startswith("on")]
        assert not handlers, plot.name
    labels_svg = ET.fromstring((gallery / "plots" / "labels.svg").read_bytes())
    texts = [element.text for element in labels_svg.iter()]
    assert NAMES[0] in texts and NAMES[1] in texts
    assert "café 東京 🍵 second line" in texts  # as text, on one line


@pytest.mark.parametrize(
    "where, message",
    [
        ("clip_score >= 'x'", "--where: column 'clip_score' is a number; cannot compare it with the string"),
        ("nosuch > 1", "--where: unknown column 'nosuch'"),
        ("__import__('os')", "--where: unsupported call at position 1"),
        ("label == 'dog'", "--where: 'dog' is not a class of column 'label'"),
    ],
)
def test_a_bad_where_is_one_line_and_writes_nothing(labelled, tmp_path, capsys, where, message):
    output = tmp_path / "out"
    shutil.copytree(labelled, output)
    shutil.rmtree(output / "gallery")
    capsys.readouterr()
    assert main(["gallery", str(output), "--where", where]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pixart-batch: error: {message}") and err.count("\n") == 1, err
    assert not (output / "gallery").exists()


def test_matplotlib_is_imported_by_the_gallery_only(tmp_path, tiny_model):
    """``import pixart_batch``, the CLI's parser, the gallery's import and a whole generate load no
    matplotlib; building a gallery does."""
    script = f"""
import sys
import pixart_batch, pixart_batch.cli, pixart_batch.gallery
pixart_batch.cli.build_parser()
assert "matplotlib" not in sys.modules, "imported with the package"
sys.path.insert(0, {str(Path(__file__).parent)!r})
from helpers import tiny_config
from pixart_batch.run import run_generate
open({str(tmp_path / "p.txt")!r}, "w").write("a cat\\n")
config = tiny_config(**{{"ray.executor": "local", "generation.num_inference_steps": 1}})
run_generate(config, {str(tmp_path / "p.txt")!r}, {str(tmp_path / "out")!r})
assert "matplotlib" not in sys.modules, "imported by generate"
assert not [m for m in sys.modules if m == "ray" or m.startswith("ray.")], "generate (local) imported Ray"
pixart_batch.gallery.build_gallery({str(tmp_path / "out")!r})
assert "matplotlib" in sys.modules and "matplotlib.pyplot" not in sys.modules
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


# --- a real browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    import os

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); under CI=true this test fails instead")


def _dom(chromium: str, tmp_path: Path, url: str) -> tuple[str, str]:
    """The DOM after load, and Chromium's console lines (none expected)."""
    profile = tmp_path / "chromium-profile"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    command += ["--enable-logging=stderr", "--v=0", "--window-size=1200,900", "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, "\n".join(line for line in done.stderr.splitlines() if ":CONSOLE" in line)


def _order(dom: str) -> list[str]:
    return (_body(dom).get("data-order") or "").split()


def test_browser_sorts_by_score_both_ways_and_filters(labelled, chromium, tmp_path):
    rows = _rows(labelled)
    scored = [r for r in rows if r["clip_score"] is not None]
    missing = [r["key"] for r in rows if r["clip_score"] is None]
    url = (labelled / "gallery" / "all.html").as_uri()
    dom, console = _dom(chromium, tmp_path, url + "#sort=clip_score:desc")
    assert console == "" and _body(dom).get("data-visible") == str(len(rows))
    best = [r["key"] for r in sorted(scored, key=lambda r: -r["clip_score"])]
    assert _order(dom) == best + missing  # a row without a score last, in both directions
    figures = [str(a["data-key"]) for tag, a in Page(dom).tags if tag == "figure"]
    assert figures == best + missing  # the cards themselves are in that order
    dom, console = _dom(chromium, tmp_path, url + "#sort=clip_score:asc")
    assert console == "" and _order(dom) == best[::-1] + missing
    dom, _ = _dom(chromium, tmp_path, url + "#label=1&sort=aesthetic_score:asc")
    ones = [r for r in rows if r["label"] == 1]
    assert _body(dom).get("data-visible") == str(len(ones))
    assert sorted(_order(dom)) == sorted(r["key"] for r in ones)
    assert [r["aesthetic_score"] for r in sorted(ones, key=lambda r: _order(dom).index(r["key"]))] == sorted(
        r["aesthetic_score"] for r in ones
    )
    visible = [str(a["data-key"]) for tag, a in Page(dom).tags if tag == "figure" and "hidden" not in a]
    assert sorted(visible) == sorted(r["key"] for r in ones)
    dom, _ = _dom(chromium, tmp_path, url + "#score=clip_score&min=22&max=30&keep=kept")
    wanted = [r for r in scored if 27 <= r["clip_score"] <= 30]
    assert sorted(_order(dom)) == sorted(r["key"] for r in wanted)
    dom, _ = _dom(chromium, tmp_path, url + "#q=lighthouse")
    assert _body(dom).get("data-visible") == "2"


def test_browser_every_page_loads_without_console_errors(labelled, chromium, tmp_path):
    gallery = labelled / "gallery"
    plots = len(list((gallery / "plots").iterdir()))
    long_text = False
    for page in sorted(gallery.glob("*.html")):
        dom, console = _dom(chromium, tmp_path, page.as_uri())
        body = _body(dom)
        cards = len(Page(page.read_text(encoding="utf-8")).keys())
        assert console == "", (page.name, console)
        assert body.get("data-images-broken") == "0", page.name
        assert body.get("data-card-images-loaded") == str(cards), page.name
        images = cards + (plots if page.name == "index.html" else 0)
        assert body.get("data-images-loaded") == str(images), page.name
        if "a very long prompt" in page.read_text(encoding="utf-8") and page.name != "index.html":
            assert int(body.get("data-more-buttons") or 0) >= 1, page.name  # the long caption can be opened
            long_text = True
    assert long_text


def test_browser_screenshots_show_cards_and_plots(labelled, chromium, tmp_path):
    from PIL import Image, ImageStat

    for name in ("index.html", "label-0.html"):
        shot = tmp_path / f"{name}.png"
        url = (labelled / "gallery" / name).as_uri()
        size = "--window-size=1200,2000"
        _browser(chromium, tmp_path, "--hide-scrollbars", f"--screenshot={shot}", size, url)
        with Image.open(shot) as image:
            rgb = image.convert("RGB")
            assert rgb.size == (1200, 2000)
            assert len(rgb.getcolors(maxcolors=1 << 20) or ()) > 200 and max(ImageStat.Stat(rgb).stddev) > 20
