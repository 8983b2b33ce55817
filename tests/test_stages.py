"""Stages without Ray: cleaning, encoding and the store, planning."""

import os

import numpy as np
import pytest
import torch
from helpers import encode_spec

from pixart_batch import schema as S
from pixart_batch.buckets import aspect_ratio_table, read_model_geometry
from pixart_batch.config import GenerationConfig
from pixart_batch.expansion import choose_size, image_key, image_seed
from pixart_batch.prompts import PromptRecord
from pixart_batch.spec import CleanSpec
from pixart_batch.store import EmbeddingStore, StoreIdentity, caption_key

IDENTITY = StoreIdentity(
    encoder="x", d_model=32, settings={"model.max_sequence_length": 120, "model.clean_caption": True}
)

NASTY = [
    "<b>bold</b> &amp; text, a poster of a cat",
    "A logo like https://example.com/x.png?size=64&v=2 -- minimal, flat",
    "  Spaces   AND CAPS  ",
    "#hashtag @someone 1920x1080 “quotes” — dashes",
    "http://x.com/a",
]


def test_cleaning_is_diffusers_cleaning(tiny_pipeline):
    from pixart_batch.stages.clean import CaptionCleaner

    batch = {
        S.PROMPT: np.array(NASTY, dtype=object),
        S.NEGATIVE_PROMPT: np.array(["", "Blurry <i>x</i>", "", "", ""], dtype=object),
    }
    out = CaptionCleaner(CleanSpec(True, "PixArtAlphaPipeline"))(batch)
    assert out[S.CAPTION].tolist() == tiny_pipeline._text_preprocessing(NASTY, clean_caption=True)
    assert out[S.NEGATIVE_CAPTION].tolist() == tiny_pipeline._text_preprocessing(
        ["", "Blurry <i>x</i>", "", "", ""], clean_caption=True
    )
    assert out[S.CAPTION].tolist()[-1] == ""  # a URL-only prompt cleans to empty text
    raw = CaptionCleaner(CleanSpec(False, "PixArtAlphaPipeline")).clean(NASTY)
    sigma = CaptionCleaner(CleanSpec(True, "PixArtSigmaPipeline")).clean(NASTY)
    assert sigma == out[S.CAPTION].tolist()  # Σ's pipeline cleans the same way (its own methods)
    assert raw == [t.lower().strip() for t in NASTY]


def test_missing_cleaning_dependency_is_refused(monkeypatch):
    import importlib.util

    from pixart_batch.errors import UserError
    from pixart_batch.stages import clean

    real = importlib.util.find_spec
    monkeypatch.setattr(
        clean.importlib.util, "find_spec", lambda name, *a: None if name == "ftfy" else real(name, *a)
    )
    with pytest.raises(UserError, match="ftfy"):
        clean.CaptionCleaner(CleanSpec(True, "PixArtAlphaPipeline"))
    clean.CaptionCleaner(CleanSpec(False, "PixArtAlphaPipeline"))  # cleaning off needs neither


def _encode(tiny_model, captions, max_len=120):
    from pixart_batch.stages.encode import TextEncoder

    encoder = TextEncoder(encode_spec(tiny_model, max_len))
    batch = {
        S.CAPTION_KEY: np.array([caption_key(c) for c in captions], dtype=object),
        S.CAPTION: np.array(captions, dtype=object),
    }
    return encoder(batch)


def test_stored_embeddings_repad_to_diffusers_encode_prompt(tmp_path, tiny_model, tiny_pipeline):
    import pyarrow as pa

    from pixart_batch.tensors import bytes_to_tensor

    captions = tiny_pipeline._text_preprocessing(NASTY[:3] + ["a cute cat " * 60], clean_caption=True)
    batch = _encode(tiny_model, captions)
    assert batch[S.TRUNCATED].tolist() == [False, False, False, True]
    assert batch[S.NUM_TOKENS][-1] == 120
    identity = IDENTITY
    store = EmbeddingStore(str(tmp_path / "store"), identity).open()
    store.write_part(
        pa.table(
            {k: batch[k].tolist() for k in (S.CAPTION_KEY, S.CAPTION, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING)}
        )
    )
    found = store.lookup(batch[S.CAPTION_KEY].tolist())
    for caption, key in zip(captions, batch[S.CAPTION_KEY], strict=True):
        embeds, mask, _, _ = tiny_pipeline.encode_prompt(
            caption, do_classifier_free_guidance=False, clean_caption=False, max_sequence_length=120
        )
        count = found[key][S.NUM_TOKENS]
        assert int(mask.sum()) == count
        stored = bytes_to_tensor(found[key][S.EMBEDDING], "float32", (count, 32))
        repadded = torch.zeros(1, 120, 32)
        repadded[0, :count] = stored
        torch.testing.assert_close(repadded[:, :count], embeds[:, :count], atol=1e-5, rtol=1e-5)


def test_store_holds_valid_tokens_only(tmp_path, tiny_model):
    """Bytes per prompt = tokens × d_model × dtype size plus a small overhead (not 120 × d_model)."""
    import pyarrow as pa

    captions = [f"prompt number {i} " + "a red cat " * (i % 7) for i in range(200)]
    batch = _encode(tiny_model, captions)
    identity = IDENTITY
    store = EmbeddingStore(str(tmp_path / "store"), identity).open()
    store.write_part(
        pa.table(
            {k: batch[k].tolist() for k in (S.CAPTION_KEY, S.CAPTION, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING)}
        )
    )
    (path,) = store.part_files()
    file_bytes = os.path.getsize(path)
    payload = int(batch[S.NUM_TOKENS].sum()) * 32 * 4
    padded = len(captions) * 120 * 32 * 4
    overhead_per_prompt = (file_bytes - payload) / len(captions)
    assert file_bytes >= payload
    assert overhead_per_prompt < 150, overhead_per_prompt  # key + caption + counts + Parquet framing
    assert file_bytes < padded / 4


def test_store_location_is_keyed_by_identity(tmp_path):
    settings = {
        "model.max_sequence_length": 120,
        "model.clean_caption": True,
        "stages.encode.dtype": "float32",
        "stages.encode.quantization": "none",
    }
    keys = {
        IDENTITY.key(),
        StoreIdentity("y", 32, IDENTITY.settings).key(),
        StoreIdentity("x", 64, IDENTITY.settings).key(),
    }
    base = StoreIdentity("x", 32, settings)
    keys.add(base.key())
    for name, value in (
        ("model.max_sequence_length", 300),
        ("model.clean_caption", False),
        ("stages.encode.dtype", "bfloat16"),
        ("stages.encode.quantization", "int8"),
    ):
        keys.add(StoreIdentity("x", 32, {**settings, name: value}).key())
    assert len(keys) == 8


def test_seeds_depend_on_run_seed_prompt_and_index_only():
    assert image_seed(0, "a", 0) == image_seed(0, "a", 0)
    assert (
        len({image_seed(0, "a", 0), image_seed(1, "a", 0), image_seed(0, "b", 0), image_seed(0, "a", 1)}) == 4
    )
    assert 0 <= image_seed(123, "x", 7) < 2**63
    assert "." not in image_key("p1", 3)


def test_sizes_map_to_diffusers_bins(tiny_model):
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_256_BIN

    geometry = read_model_geometry(tiny_model)
    table = aspect_ratio_table(geometry.sample_size)
    assert table is ASPECT_RATIO_256_BIN

    def record(**kw) -> PromptRecord:
        fields = {"width": None, "height": None, "aspect_ratio": None, **kw}
        return PromptRecord(prompt_id="p", prompt="x", negative_prompt=None, source="f:1", **fields)

    native = choose_size(record(), GenerationConfig(), geometry, table)
    assert (native.height, native.width, native.bucket_height, native.bucket_width) == (256, 256, 256, 256)
    wide = choose_size(record(aspect_ratio=0.25), GenerationConfig(), geometry, table)
    assert (wide.height, wide.width) == (wide.bucket_height, wide.bucket_width) == (128, 512)
    exact = choose_size(record(height=96, width=160), GenerationConfig(), geometry, table)
    assert (exact.height, exact.width) == (96, 160)
    assert (exact.bucket_height, exact.bucket_width) == (192, 320)
    default = choose_size(record(), GenerationConfig(width=320, height=192), geometry, table)
    assert (default.bucket_height, default.bucket_width) == (192, 320)


def test_lookup_opens_only_parts_whose_key_range_holds_the_key(tmp_path, tiny_model):
    import pyarrow as pa

    batch = _encode(tiny_model, [f"caption {i}" for i in range(40)])
    table = pa.table(
        {k: batch[k].tolist() for k in (S.CAPTION_KEY, S.CAPTION, S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING)}
    ).sort_by(S.CAPTION_KEY)
    identity = IDENTITY
    store = EmbeddingStore(str(tmp_path / "store"), identity).open()
    low_part, high_part = store.write_part(table.slice(0, 20)), store.write_part(table.slice(20))
    index = store.index()
    assert {path for path, _, _ in index} == {low_part, high_part}
    keys = table.column(S.CAPTION_KEY).to_pylist()
    for key, part in ((keys[3], low_part), (keys[30], high_part)):
        assert [path for path, low, high in index if low <= key <= high] == [part]
    found = store.lookup([keys[3], keys[30]], index)
    assert found[keys[3]][S.EMBEDDING] == table.column(S.EMBEDDING)[3].as_py()
    with pytest.raises(KeyError, match="lacks 1 caption"):
        store.lookup(["0" * 32], index)
