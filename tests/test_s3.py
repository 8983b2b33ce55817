"""The whole pipeline against a local S3-compatible server (moto, on 127.0.0.1): prompts read from,
store and dataset written to ``s3://``, then a kill-and-resume against the same bucket."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers import s3_server
from runner import kill_tree, run_cli, start_cli, wait_for

pytestmark = pytest.mark.slow

PROMPTS = "\n".join(
    [
        "a red fox in the snow --ar 1:2",
        "a blue house by the sea",
        "a green tree --hw 96:160",
        "a cup of coffee",
        "a robot",
        "a castle at night",
    ]
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server("pixart") as (client, env):
        client.put_object(Bucket="pixart", Key="inputs/prompts.txt", Body=PROMPTS.encode())
        yield client, env


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="pixart", Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _rows(client, prefix: str) -> dict[str, dict]:
    import pyarrow.parquet as pq

    rows = {}
    for key in [k for k in _keys(client, prefix + "/data/") if k.endswith(".parquet")]:
        body = client.get_object(Bucket="pixart", Key=key)["Body"].read()
        for row in pq.read_table(io.BytesIO(body)).to_pylist():
            assert row["key"] not in rows
            rows[row["key"]] = row
    return rows


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_s3_prompts_store_and_dataset_with_kill_and_resume(tmp_path, s3, tiny_model, executor):
    client, env = s3
    log = tmp_path / "runs.log"
    output = f"s3://pixart/runs/{executor}"
    command = [
        "generate",
        "--config",
        "configs/tiny.yaml",
        "--prompts",
        "s3://pixart/inputs/prompts.txt",
        "--output",
        output,
        "--images-per-prompt",
        "2",
        "--batch-size",
        "2",
        "--executor",
        executor,  # Ray: its tasks and actors read and write the bucket themselves; local: the driver does
    ]
    config = tmp_path / "small.yaml"
    config.write_text(open("configs/tiny.yaml").read().replace("rows_per_shard: 32", "rows_per_shard: 2"))
    command[2] = str(config)

    run = start_cli(command, log, PIXART_BATCH_SLOW="denoise:0.7", **env)
    wait_for(lambda: any(k.endswith(".parquet") for k in _keys(client, f"runs/{executor}/data/")), run, log)
    kill_tree(run)
    partial = _rows(client, f"runs/{executor}")
    assert 0 < len(partial) < 12
    assert _keys(client, f"runs/{executor}/embeddings/")  # the store lives in the bucket too

    assert run_cli(command, log, **env) == 0, log.read_text()[-3000:]
    report = json.loads(
        client.get_object(Bucket="pixart", Key=f"runs/{executor}/run_report.json")["Body"].read()
    )
    assert report["images_skipped"] == len(partial) and report["images_generated"] == 12 - len(partial)
    assert report["embeddings_encoded"] == 0
    rows = _rows(client, f"runs/{executor}")
    assert len(rows) == 12
    for key, row in partial.items():
        assert rows[key]["sha256"] == row["sha256"]
    assert not [k for k in _keys(client, "runs/") if "/.tmp-" in k]
    assert run_cli(["verify", output], log, **env) == 0, log.read_text()[-2000:]
    assert "OK: 12 images" in log.read_text()

    from PIL import Image

    sample = next(iter(rows.values()))
    assert Image.open(io.BytesIO(sample["image"]["bytes"])).size == (sample["width"], sample["height"])
    assert np.asarray(Image.open(io.BytesIO(sample["image"]["bytes"]))).std() > 0
