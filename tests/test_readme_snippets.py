"""README's Python snippets run as written on a demo output, with every warning an error.

The ```python blocks that read ``out/demo`` run against a small demo output made here (``out/demo``
replaced by its path); the blocks that need a hub checkpoint or a GPU are skipped by name
(``NEEDS_HUB``). The inline WebDataset reader is run on a WebDataset output the same way."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from helpers import tiny_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
NEEDS_HUB = ("from_pretrained(",)
"""A block with any of these needs a published checkpoint (hub, network, GPU): not run here."""


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def _demo(root: Path, output_format: str = "parquet") -> Path:
    from pixart_batch.run import run_generate

    prompts = root / "prompts.txt"
    prompts.write_text("a lighthouse on a cliff\na tall tower --ar 1:2\n", encoding="utf-8")
    output = root / "demo"
    config = tiny_config(
        **{"ray.executor": "local", "generation.num_inference_steps": 2, "output.format": output_format}
    )
    run_generate(config, str(prompts), str(output))
    return output


def _run_without_warnings(code: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_snippet"})


def test_the_readme_has_the_snippets_this_test_runs():
    blocks = python_blocks()
    assert [block for block in blocks if "out/demo" in block], "no README snippet reads out/demo any more"
    assert all("out/demo" in block or any(mark in block for mark in NEEDS_HUB) for block in blocks), (
        "a README python block is neither run here nor marked as needing the hub"
    )


def test_readme_python_snippets_run_on_a_demo_output_without_warnings(tmp_path, tiny_model):
    output = _demo(tmp_path)
    ran = 0
    for block in python_blocks():
        if any(mark in block for mark in NEEDS_HUB):
            continue  # needs a published checkpoint (hub / GPU)
        if "out/demo" in block:
            _run_without_warnings(block.replace("out/demo", output.as_posix()))
            ran += 1
    assert ran >= 1


def test_readme_webdataset_reader_runs_without_warnings(tmp_path, tiny_model):
    found = re.search(r"`(webdataset\.WebDataset\(.*?\))`", README)
    assert found, "README's WebDataset reader is gone"
    output = _demo(tmp_path, "webdataset")
    expression = found.group(1).replace("OUTPUT", output.as_posix())
    _run_without_warnings(
        f"import webdataset\nfrom glob import glob\nsamples = list({expression})\nassert len(samples) == 2\n"
    )


def section_commands(section: str) -> list[list[str]]:
    """The ``pixart-batch`` command lines of the first ```bash block of README's ``## section`` (the
    section's own commands; its subsections' examples may name outputs of their own), comments dropped."""
    import shlex

    body = README.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"^```bash\n(.*?)^```", body, flags=re.S | re.M)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [command for command in commands if command and command[0] == "pixart-batch"]


def test_readme_training_sets_and_gallery_run_as_written(tmp_path, tiny_model, monkeypatch, capsys):
    """README's "Run the demo", "Training sets" and "Looking at the images", command by command, on the tiny
    models (the shipped configs/training-set.yaml and examples/classes-10.yaml), from a fresh folder."""
    from pixart_batch.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    training = section_commands("Training sets")
    assert [command[1] for command in training] == ["plan", "generate", "status", "gallery", "export"]
    looking = section_commands("Looking at the images")
    assert looking and all(command[1] == "gallery" for command in looking)
    for command in [*section_commands("Run the demo"), *training, *looking]:
        capsys.readouterr()
        assert main(command[1:]) == 0, (command, capsys.readouterr())
    classes = tmp_path / "out" / "classes" / "gallery"
    assert (classes / "kept.html").is_file() and (classes / "plots" / "clip_score-by-label.svg").is_file()
    assert len(list(classes.glob("label-*.html"))) == 10
    assert (tmp_path / "out" / "demo" / "gallery" / "index.html").is_file()
    assert main(["verify", "out/classes-20"]) == 0
