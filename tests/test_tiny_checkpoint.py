import hashlib
from pathlib import Path

import pytest


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_tiny_checkpoint_is_deterministic_per_seed_and_safetensors_only(tmp_path):
    from pixart_batch.tiny import build_tiny_checkpoint

    a = _digest(build_tiny_checkpoint(tmp_path / "a", seed=3))
    b = _digest(build_tiny_checkpoint(tmp_path / "b", seed=3))
    c = _digest(build_tiny_checkpoint(tmp_path / "c", seed=4))
    assert a == b
    weights = [name for name in a if "model" in name and not name.endswith(".json")]
    assert weights and all(name.endswith(".safetensors") for name in weights)
    assert {name.split("/")[0] for name in a} == {"model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"}
    assert any(a[name] != c[name] for name in weights)


def test_tiny_checkpoint_loads_with_plain_diffusers(tiny_pipeline):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtTransformer2DModel
    from transformers import T5EncoderModel

    assert isinstance(tiny_pipeline.transformer, PixArtTransformer2DModel)
    assert isinstance(tiny_pipeline.vae, AutoencoderKL)
    assert isinstance(tiny_pipeline.text_encoder, T5EncoderModel)
    assert isinstance(tiny_pipeline.scheduler, DPMSolverMultistepScheduler)
    assert tiny_pipeline.vae_scale_factor == 8
    ids = tiny_pipeline.tokenizer("a cute cat").input_ids
    assert ids[-1] == tiny_pipeline.tokenizer.eos_token_id and len(ids) == 4


def test_existing_nonempty_directory_is_refused(tmp_path):
    from pixart_batch.errors import UserError
    from pixart_batch.tiny import build_tiny_checkpoint

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        build_tiny_checkpoint(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_identity_is_the_files_not_the_path(tmp_path, tiny_model):
    import shutil

    from pixart_batch.config import ModelConfig
    from pixart_batch.models import checkpoint_identity, encoder_identity, resolve_model

    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, copy)
    here, there = resolve_model(ModelConfig(path=str(tiny_model))), resolve_model(ModelConfig(path=str(copy)))
    assert not here.is_hub and not there.is_hub
    assert encoder_identity(here) == encoder_identity(there)
    assert checkpoint_identity(here) == checkpoint_identity(there)
