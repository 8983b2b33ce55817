"""Output formats (Parquet, WebDataset) and the Hub dataset card: read back with the ``webdataset``
package and ``datasets.load_dataset(OUTPUT)``; resume through the key indexes on the Ray executor;
damaged tars named; a format change refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import dataset_images, tiny_config

from pixart_batch.audit import verify
from pixart_batch.config import with_overrides
from pixart_batch.errors import ConfigError, OutputError
from pixart_batch.output import OutputDataset
from pixart_batch.run import run_generate

pytestmark = pytest.mark.slow

PROMPTS = ["a red fox in the snow --ar 1:2", "a blue house by the sea", "a green tree on a hill --hw 96:160"]
SMALL = {"output.rows_per_shard": 2, "generation.images_per_prompt": 2}
HUB_SIZE_CATEGORIES = {
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
}


def _run(prompts: Path, output: Path, output_format: str, executor: str) -> dict:
    config = tiny_config(**SMALL, **{"output.format": output_format, "ray.executor": executor})
    return run_generate(config, str(prompts), str(output))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("writers") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def webdataset_output(tmp_path_factory, prompts, ray_session, tiny_model) -> Path:
    """A WebDataset output made by the Ray executor."""
    output = tmp_path_factory.mktemp("wds") / "out"
    report = _run(prompts, output, "webdataset", "ray")
    assert report["executor"] == "ray" and report["images_generated"] == 2 * len(PROMPTS)
    return output


def _check_card(output: Path, data_files: str, image_feature: str) -> None:
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    # DatasetCard.validate() posts to the Hub (network); offline, the card is parsed and checked here.
    card = DatasetCard.load(output / "README.md")
    data = card.data.to_dict()
    assert (
        data["task_categories"] == ["text-to-image"] and set(data["size_categories"]) <= HUB_SIZE_CATEGORIES
    )
    assert data["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}
    ]
    assert data["generation"]["output.format"] in data["tags"]
    assert "| 256x256 | 2 |" in card.text and "(sample_grid.jpg)" in card.text
    from PIL import Image

    with Image.open(output / "sample_grid.jpg") as grid:
        assert grid.format == "JPEG" and grid.height > 0
    dataset = load_dataset(str(output), split="train")  # the folder: README's configs find the shards
    assert len(dataset) == 2 * len(PROMPTS)
    assert type(dataset.features[image_feature]).__name__ == "Image"
    assert all(row[image_feature].size[0] > 0 for row in dataset)


def test_webdataset_on_ray_reads_back_resumes_exactly_once_and_keeps_its_format(webdataset_output, prompts):
    output = webdataset_output
    tars = sorted((output / "data").rglob("*.tar"))
    assert len(tars) == len(PROMPTS)  # rows_per_shard 2
    assert all(tar.with_name(tar.name.replace(".tar", ".keys.parquet")).is_file() for tar in tars)
    images = dataset_images(output)  # webdataset.WebDataset: .png, .json (the row), .txt (the caption)
    assert len(images) == 2 * len(PROMPTS)
    assert verify(str(output)).ok
    _check_card(output, "data/**/*.tar", "png")

    report = _run(prompts, output, "webdataset", "ray")  # the anti-join reads the key indexes
    assert report["images_generated"] == 0 and report["images_skipped"] == 2 * len(PROMPTS)
    assert sorted((output / "data").rglob("*.tar")) == tars

    refused = r"setting 'output\.format' is \"parquet\" but this output was generated with \"webdataset\""
    with pytest.raises(OutputError, match=refused):
        _run(prompts, output, "parquet", "local")


def test_parquet_card_loads_with_the_image_feature(tmp_path, prompts, tiny_model):
    output = tmp_path / "out"
    _run(prompts, output, "parquet", "local")
    _check_card(output, "data/**/*.parquet", "image")


def test_damaged_tars_are_named_and_an_orphan_index_is_not_committed(webdataset_output, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(webdataset_output, output)
    first, second, third = sorted((output / "data").rglob("*.tar"))
    fmt = OutputDataset(str(output)).format
    assert fmt.name == "webdataset" and len(fmt.committed_keys()) == 2 * len(PROMPTS)

    # A tar without its key index; a tar whose index names other keys; a truncated tar.
    first.with_name(first.name.replace(".tar", ".keys.parquet")).unlink()
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = second.with_name(second.name.replace(".tar", ".keys.parquet"))
    pq.write_table(pa.table({"key": ["someone-else"]}), index)
    data = third.read_bytes()
    third.write_bytes(data[: len(data) // 2])
    reasons = {Path(d.path).name: d.reason for d in fmt.find_damaged()}
    assert reasons.keys() == {first.name, second.name, third.name}
    assert "no key index" in reasons[first.name] and "keys in its index" in reasons[second.name]
    problems = "\n".join(verify(str(output)).problems)
    assert all(str(tar) in problems for tar in (first, second, third))

    # An index whose tar never got committed (a run killed between the two commits): not committed,
    # removed by the next run's preparation.
    orphan = first.with_name("999990000.keys.parquet")
    shutil.copy(index, orphan)
    assert str(orphan) not in fmt.key_files()
    assert fmt.remove_uncommitted() == 1 and not orphan.exists()


def test_output_format_is_checked_and_on_the_command_line():
    with pytest.raises(ConfigError, match=r"^output\.format: must be one of parquet, webdataset, got 'tar'$"):
        with_overrides(tiny_config(), {"output.format": "tar"})
    from pixart_batch.cli import _overrides, build_parser

    args = build_parser().parse_args(
        ["generate", "--prompts", "p", "--output", "o", "--output-format", "webdataset"]
    )
    assert _overrides(args)["output.format"] == "webdataset"
