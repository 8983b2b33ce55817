"""A tiny random CLIP in the real ``transformers`` layout, for the quality-score stage's tests.

Like the tiny PixArt checkpoint (:mod:`pixart_batch.tiny`) nothing is fetched: a ``CLIPModel`` with
small text and vision towers and weights drawn from ``torch.manual_seed(seed)``, a byte-level BPE
``CLIPTokenizer`` (``vocab.json`` + ``merges.txt``: the 256 byte symbols, the same with ``</w>``, a
few merges, the two special tokens) and a ``CLIPImageProcessor`` at 32 × 32, saved with
``save_pretrained(safe_serialization=True)``: ``CLIPModel.from_pretrained(dir)`` and
``CLIPProcessor.from_pretrained(dir)`` load it offline, as they load ``openai/clip-vit-base-patch32``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .tiny import build_cached, default_cache_dir

_MERGES = [
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("o", "f</w>"),
    ("i", "n"),
    ("o", "n</w>"),
    ("e", "r"),
    ("a", "t"),
    ("o", "r"),
    ("c", "a"),
    ("ca", "t</w>"),
    ("d", "o"),
    ("do", "g</w>"),
]
"""A few BPE merges (the tokenizer spells any text from bytes; these make common pieces one token)."""

IMAGE_SIZE = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte → printable character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path, int]:
    """``vocab.json`` and ``merges.txt`` in CLIP's layout; returns them and the vocabulary size."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in _MERGES) + "\n", encoding="utf-8"
    )
    return vocab_file, merges_file, len(vocab)


def build_tiny_clip(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random CLIP (model, tokenizer, image processor) to ``directory``; returns it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    target = Path(directory)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise UserError(
            f"{target}: exists and is not an empty directory; choose a new directory for the CLIP model"
        )
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tiny-clip-tokenizer-"))
    try:
        vocab_file, merges_file, size = write_clip_tokenizer_files(scratch)
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=16)
        bos, eos = size - 2, size - 1  # the two special tokens close the vocabulary
        config = CLIPConfig(
            text_config={
                "vocab_size": size,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 16,
                "bos_token_id": bos,
                "eos_token_id": eos,
                "pad_token_id": eos,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": IMAGE_SIZE,
                "patch_size": 8,
            },
            projection_dim=16,
        )
        torch.manual_seed(seed)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model = CLIPModel(config).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
        images = CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
        hf_logging.disable_progress_bar()  # its "Writing model shards" bar is not this tool's output
        model.save_pretrained(target, safe_serialization=True)
        CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def cached_tiny_clip(seed: int = 0) -> Path:
    """The tiny CLIP for ``seed``, built on first use (in a private directory, the first rename wins)."""
    return build_cached(
        default_cache_dir() / f"tiny-clip-seed{seed}-v1",
        "config.json",
        lambda d: build_tiny_clip(d, seed=seed),
    )
