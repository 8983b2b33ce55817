"""Plain helpers the tests share (fixtures stay in conftest.py): the tiny recipe with overrides,
prompt files, reading a dataset's images back. Imported as ``from helpers import ...`` (pytest puts
``tests/`` on ``sys.path``, as for ``runner`` and ``raycluster``)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from pixart_batch.spec import EncodeSpec

DATA = Path(__file__).parent / "data"


def tiny_config(**overrides):
    """The tiny recipe with dotted overrides (``{"generation.images_per_prompt": 2}``)."""
    from pixart_batch.config import load_config, with_overrides

    base = load_config(Path(__file__).parent.parent / "configs" / "tiny.yaml")
    return with_overrides(base, overrides)


def recipe_file(path: Path, overrides: dict) -> Path:
    """The tiny recipe with dotted overrides (``{"output.rows_per_shard": 2}``), written to ``path``
    for the CLI's ``--config``."""
    import yaml

    data = yaml.safe_load((Path(__file__).parent.parent / "configs" / "tiny.yaml").read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


def copy_prompts(name: str, directory: Path) -> Path:
    target = directory / name
    shutil.copy(DATA / "prompts" / name, target)
    return target


def dataset_images(output: Path) -> dict:
    """``{key: RGB pixels}`` of every committed image, read as a user would: ``datasets`` for Parquet
    shards, the ``webdataset`` package for tar shards (with each sample's .json and .txt checked).
    Fails on a duplicate key."""
    import numpy as np

    tars = sorted(str(p) for p in (output / "data").rglob("*.tar") if not p.name.startswith("."))
    if not tars:
        from datasets import load_dataset

        dataset = load_dataset("parquet", data_dir=str(output / "data"), split="train")
        keys = dataset["key"]
        assert len(keys) == len(set(keys)), "duplicate keys"
        return {row["key"]: np.asarray(row["image"].convert("RGB"), dtype=np.int16) for row in dataset}
    import webdataset

    images: dict = {}
    for sample in webdataset.WebDataset(tars, shardshuffle=False).decode("pil"):
        key = sample["__key__"]
        assert key not in images, f"duplicate key {key}"
        (image,) = [sample[ext] for ext in ("png", "jpg", "webp") if ext in sample]
        assert sample["json"]["key"] == key and sample["txt"] == sample["json"]["caption"]
        images[key] = np.asarray(image.convert("RGB"), dtype=np.int16)
    return images


def encode_spec(tiny_model, max_len=120, dtype="float32", quantization="none") -> EncodeSpec:
    from pixart_batch.config import ModelConfig
    from pixart_batch.models import resolve_model

    return EncodeSpec(
        resolve_model(ModelConfig(path=str(tiny_model))).source, dtype, "cpu", max_len, quantization
    )


def hold_a_shard(output: Path) -> Path:
    """A committed (if tiny) Parquet shard in ``output``: the settings guard then protects it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = output / "data" / "run0" / "0000" / "train-run0-00000-0000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"key": ["k"]}), path)
    return path


@contextlib.contextmanager
def s3_server(*buckets: str):
    """A local S3-compatible server (moto, on 127.0.0.1) with ``buckets``: yields ``(boto3 client, env)``,
    ``env`` the variables that point boto3 and pyarrow at it (the caller sets them where it needs them)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield client, env
    finally:
        server.stop()
