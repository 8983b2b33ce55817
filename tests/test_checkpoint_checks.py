"""A checkpoint that would fail inside an actor — configs that do not fit each other or their weights,
weight files that are garbage, cut short or not the ones the loader reads — is refused in one line while
the run is validated, before anything is written (the weights are compared by their headers only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import tiny_config

from pixart_batch.errors import CheckpointError
from pixart_batch.spec import RunSpec


def _config(folder: Path, component: str, **changes) -> None:
    path = folder / component / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value(data[key]) if callable(value) else value
    path.write_text(json.dumps(data))


def _weights(folder: Path, component: str) -> Path:
    [path] = (folder / component).glob("*.safetensors")
    return path


EDITS = {
    "no sample_size": (
        lambda ck: _config(ck, "transformer", sample_size=None),
        r"transformer/config.json: 'sample_size' is missing",
    ),
    "text sample_size": (
        lambda ck: _config(ck, "transformer", sample_size="abc"),
        r"'sample_size' is \"abc\", expected a positive",
    ),
    "no d_model": (
        lambda ck: _config(ck, "text_encoder", d_model=None),
        r"text_encoder/config.json: 'd_model' is missing",
    ),
    "vae blocks": (
        lambda ck: _config(ck, "vae", block_out_channels=5),
        r"'block_out_channels' is 5, expected a list",
    ),
    "config a list": (
        lambda ck: (ck / "transformer" / "config.json").write_text("[1, 2]"),
        r"transformer/config.json: expected a JSON object, found a JSON list",
    ),
    "in_channels": (
        lambda ck: _config(ck, "transformer", in_channels=3),
        r"'in_channels' is 3 but the vae's 'latent_channels' is 4",
    ),
    "caption_channels": (
        lambda ck: _config(ck, "transformer", caption_channels=lambda v: v * 2),
        r"'caption_channels' is 64 but the text_encoder's 'd_model' is 32",
    ),
    "more layers": (
        lambda ck: _config(ck, "transformer", num_layers=lambda v: v + 1),
        r"transformer: its weights lack transformer_blocks\.2\..*the config does not match the weights",
    ),
    "wider T5": (
        lambda ck: _config(ck, "text_encoder", d_ff=lambda v: v * 2),
        r"model.safetensors: weight encoder\.block\.0\..* has shape \[64, 32\] but .* makes it \[128, 32\]",
    ),
    "garbage weights": (
        lambda ck: _weights(ck, "vae").write_bytes(b"garbage"),
        r"diffusion_pytorch_model.safetensors: not a readable safetensors file",
    ),
    "cut short": (
        lambda ck: os.truncate(
            _weights(ck, "text_encoder"), _weights(ck, "text_encoder").stat().st_size - 100
        ),
        r"model.safetensors: not a readable safetensors file",
    ),
    "variant only": (
        lambda ck: _weights(ck, "vae").rename(ck / "vae" / "diffusion_pytorch_model.fp16.safetensors"),
        r"vae: no diffusion_pytorch_model.safetensors "
        r"\(safetensors found: diffusion_pytorch_model.fp16.safetensors\)",
    ),
    "no bins": (
        lambda ck: _config(ck, "transformer", sample_size=8),
        r"transformer sample_size 8 has no aspect-ratio table",
    ),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_a_checkpoint_that_would_fail_in_an_actor_is_refused_up_front(tiny_model, tmp_path, case):
    edit, message = EDITS[case]
    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_model, checkpoint)
    edit(checkpoint)
    with pytest.raises(CheckpointError if case != "no bins" else Exception, match=message) as info:
        RunSpec.build(tiny_config(**{"model.path": str(checkpoint)}))
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_the_shipped_tiny_checkpoints_pass(tmp_path):
    from pixart_batch.tiny import build_tiny_checkpoint

    for family, scheduler in (("alpha", "dpm-solver++"), ("sigma", "dpm-solver++"), ("alpha", "lcm")):
        folder = build_tiny_checkpoint(
            tmp_path / f"{family}-{scheduler}", seed=1, family=family, scheduler=scheduler
        )
        RunSpec.build(tiny_config(**{"model.path": str(folder)}))


def test_a_sharded_checkpoint_is_read_through_its_index(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_model, checkpoint)
    weights = _weights(checkpoint, "transformer")
    tensors = load_file(weights)
    names = sorted(tensors)
    halves = {"part-1.safetensors": names[: len(names) // 2], "part-2.safetensors": names[len(names) // 2 :]}
    for file, keys in halves.items():
        save_file({key: tensors[key] for key in keys}, checkpoint / "transformer" / file)
    weights.unlink()
    index = {"metadata": {}, "weight_map": {key: file for file, keys in halves.items() for key in keys}}
    (checkpoint / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps(index)
    )
    RunSpec.build(tiny_config(**{"model.path": str(checkpoint)}))
    (checkpoint / "transformer" / "part-2.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"part-2.safetensors: not a readable safetensors file"):
        RunSpec.build(tiny_config(**{"model.path": str(checkpoint)}))
