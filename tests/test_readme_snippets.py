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
    config = tiny_config(**{"ray.executor": "local", "generation.num_inference_steps": 2, "output.format": output_format})
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
    _run_without_warnings(f"import webdataset\nfrom glob import glob\nsamples = list({expression})\nassert len(samples) == 2\n")
