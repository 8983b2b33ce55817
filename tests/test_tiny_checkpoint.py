import hashlib
from pathlib import Path
from typing import TypedDict

import pytest


class _BuildOptions(TypedDict, total=False):
    """The string options of ``build_tiny_checkpoint``."""

    family: str
    scheduler: str
    size: str


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_tiny_checkpoint_is_deterministic_per_seed_and_safetensors_only(tmp_path):
    from pixart_batch.tiny import build_tiny_checkpoint

    a = _digest(build_tiny_checkpoint(tmp_path / "a", seed=3))
    b = _digest(build_tiny_checkpoint(tmp_path / "b", seed=3))
    c = _digest(build_tiny_checkpoint(tmp_path / "c", seed=4))
    assert a == b
    weights = [
        name
        for name in a
        if name.split("/")[0] in ("text_encoder", "transformer", "vae") and not name.endswith(".json")
    ]
    assert weights and all(name.endswith(".safetensors") for name in weights)
    assert {name.split("/")[0] for name in a} == {
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "transformer",
        "vae",
    }
    # The tokenizer exactly as the hub checkpoints ship it: SentencePiece, no tokenizer.json.
    assert sorted(name for name in a if name.startswith("tokenizer/")) == [
        "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json",
    ]
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
    with pytest.raises(UserError, match="not an empty directory"):
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


def test_spiece_tokenizer_matches_the_vocabulary_and_t5_conventions(tiny_model):
    """The shipped spiece.model holds exactly the tiny vocabulary (same pieces, same ids), T5's
    special ids, and the nmt_nfkc normalizer real T5 uses; transformers loads it as the hub's."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from pixart_batch.tiny import tiny_vocab

    processor = spm.SentencePieceProcessor(model_file=str(tiny_model / "tokenizer" / "spiece.model"))
    vocab = tiny_vocab()
    assert [processor.id_to_piece(i) for i in range(processor.get_piece_size())] == [
        piece for piece, _ in vocab
    ]
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model / "tokenizer")
    assert (
        len(tokenizer) == len(vocab) + 100
    )  # T5's 100 sentinel ids, as tokenizer_config.json's extra_ids says
    ids = tokenizer("a cute cat").input_ids
    assert ids == processor.encode("a cute cat") + [1]
    assert (
        tokenizer("ｃａｔ").input_ids == tokenizer("cat").input_ids
    )  # NFKC folds full-width letters, as T5 does


@pytest.mark.parametrize(
    "family, scheduler", [("sigma", "dpm-solver++"), ("alpha", "lcm"), ("alpha", "ddpm")]
)
def test_families_and_shipped_schedulers_load_with_their_own_pipeline(tmp_path, family, scheduler):
    import json

    import diffusers

    from pixart_batch.families import FAMILY_NAMES, SCHEDULERS
    from pixart_batch.tiny import VAE_SCALING, build_tiny_checkpoint

    path = build_tiny_checkpoint(tmp_path / "ck", family=family, scheduler=scheduler)
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == FAMILY_NAMES[family].pipeline_class
    assert index["scheduler"] == ["diffusers", SCHEDULERS[scheduler]]
    pipe = getattr(diffusers, FAMILY_NAMES[family].pipeline_class).from_pretrained(path, use_safetensors=True)
    assert type(pipe.scheduler).__name__ == SCHEDULERS[scheduler]
    assert pipe.vae.config.scaling_factor == VAE_SCALING[family]


def test_bad_build_options_are_refused(tmp_path):
    from pixart_batch.errors import UserError
    from pixart_batch.tiny import build_tiny_checkpoint

    bad: list[_BuildOptions] = [{"family": "gamma"}, {"scheduler": "heun"}, {"size": "huge"}]
    for options in bad:
        with pytest.raises(UserError, match="must be one of"):
            build_tiny_checkpoint(tmp_path / "x", **options)
    assert not (tmp_path / "x").exists()


def test_first_use_says_it_builds_the_tiny_checkpoint_once(tmp_path, monkeypatch, capsys):
    from pixart_batch.tiny import cached_tiny_checkpoint

    monkeypatch.setenv("PIXART_BATCH_CACHE", str(tmp_path / "cache"))
    path = cached_tiny_checkpoint(seed=7)
    first = capsys.readouterr().err
    assert first.count("\n") == 1 and f"building the tiny checkpoint (first run only) -> {path}" in first
    assert "Writing model shards" not in first
    assert cached_tiny_checkpoint(seed=7) == path
    assert capsys.readouterr().err == ""


def test_the_tiny_clip_is_built_without_third_party_progress_bars(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PIXART_BATCH_CACHE": str(tmp_path)}
    code = "from pixart_batch.tiny_clip import cached_tiny_clip; print(cached_tiny_clip(0))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Writing model shards" not in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-clip-seed0-v1"]  # no staging folder left
