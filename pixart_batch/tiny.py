"""A tiny random PixArt-α checkpoint in the real diffusers layout.

Tests and the default demo run on it through the same ``from_pretrained`` code
that loads ``PixArt-alpha/PixArt-XL-2-1024-MS`` by hub id. Nothing is fetched:
the T5 tokenizer's Unigram vocabulary is built here from a fixed word list, and
every weight is drawn from ``torch.Generator().manual_seed(seed)``, so the same
seed gives byte-identical safetensors files.

Sizes: the transformer has ``sample_size=32`` (latents 32², images 256², the
``ASPECT_RATIO_256_BIN`` table), the VAE the usual 8× downscale (four blocks).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# A small fixed vocabulary: letters and digits (so every word can be spelled), common
# English words and subwords. Scores follow T5's convention: log-probabilities, longer
# pieces likelier, so the Unigram model prefers whole words.
_WORDS = """
a an the of and with in on at by for to from into over under near its his her their this that
is are was be as or not no very more most some many few all one two three four five six seven
eight nine ten man woman girl boy child people person face eyes hair hand portrait body figure
cat dog bird horse fish dragon lion tiger fox wolf bear owl butterfly animal creature robot
tree trees forest flower flowers garden grass leaf leaves plant water sea ocean river lake rain
snow ice fire smoke cloud clouds sky sun moon star stars night day light lights shadow dark
city street house building castle tower bridge road car ship boat train window door room wall
mountain mountains hill valley desert beach island field space planet galaxy world nature
red blue green yellow orange purple pink white black gold golden silver brown gray colorful
big small tiny giant large little old young new beautiful cute happy sad epic dramatic soft
style art painting photo photography illustration render rendering digital oil watercolor
sketch anime cartoon cinematic realistic photorealistic detailed intricate high quality best
masterpiece lighting background foreground closeup close up view shot lens camera 8k 4k hdr
futuristic ancient medieval magical fantasy cyberpunk steampunk neon glowing vibrant bright
wearing dress hat coat standing sitting walking flying running looking holding made glass wood
stone metal paper cake coffee cup food fruit apple table chair book music ice cream
""".split()

_PIECE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-()[]{}&/#%+=*@_<>$"


def tiny_vocab() -> list[tuple[str, float]]:
    """The tokenizer's Unigram vocabulary: ``[(piece, log_prob), ...]`` in T5's order."""
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {piece for piece, _ in vocab}

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))

    for word in dict.fromkeys(_WORDS):
        add("▁" + word, -5.0 - 0.1 * len(vocab) / len(_WORDS))
    for char in _PIECE_CHARS:
        add("▁" + char, -9.0)
        add(char, -10.0)
    return vocab


def _seeded_init_(module, generator) -> None:
    """Overwrite every parameter with seeded small random values.

    diffusers zero-initialises some output projections (a random DiT would then
    predict zeros and every image would look alike); norms keep weight 1, bias 0.
    """
    import torch

    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if "norm" in name and name.endswith("weight") and param.ndim == 1:
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            else:
                fan_in = param.shape[1:].numel() if param.ndim > 1 else param.numel()
                param.copy_(torch.randn(param.shape, generator=generator) / max(fan_in, 1) ** 0.5)


def build_tiny_checkpoint(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random tiny PixArt-α checkpoint to ``directory`` (created; must not exist or be empty).

    The result loads with ``diffusers.PixArtAlphaPipeline.from_pretrained(directory)``.
    The directory appears whole or not at all: it is built beside its final name and renamed.
    """
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        from .errors import UserError

        raise UserError(f"{target}: directory exists and is not empty; choose a new directory for the checkpoint")
    target.parent.mkdir(parents=True, exist_ok=True)

    generator = torch.Generator().manual_seed(seed)
    tokenizer = T5Tokenizer(vocab=tiny_vocab(), extra_ids=100)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
        )
    )
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=16,
        sample_size=32,
        patch_size=2,
        caption_channels=32,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=256,
        scaling_factor=0.18215,
    )
    for module in (text_encoder, transformer, vae):
        _seeded_init_(module, generator)
    scheduler = DPMSolverMultistepScheduler(
        algorithm_type="dpmsolver++",
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        timestep_spacing="linspace",
    )
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        _make_deterministic(staging)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _make_deterministic(directory: Path) -> None:
    """Drop what varies between saves of identical weights (none of it is read back).

    Also give the files ordinary permissions (the staging directory is private).
    """
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for config in directory.rglob("*.json"):
        data = json.loads(config.read_text())
        if isinstance(data, dict) and "_diffusers_version" in data:
            continue
        if isinstance(data, dict) and "transformers_version" in data:
            data.pop("transformers_version")
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def default_cache_dir() -> Path:
    """Where built tiny checkpoints are cached (``$PIXART_BATCH_CACHE`` or ``~/.cache/pixart_batch``)."""
    root = os.environ.get("PIXART_BATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pixart_batch")
    return Path(root)


def cached_tiny_checkpoint(seed: int = 0) -> Path:
    """The tiny checkpoint for ``seed``, built on first use and reused after.

    Concurrent first uses are safe: each builds in a private staging directory and
    the first rename wins; the others discard theirs.
    """
    target = default_cache_dir() / f"tiny-pixart-alpha-seed{seed}"
    if (target / "model_index.json").is_file():
        return target
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=_ensure(default_cache_dir())))
    try:
        built = build_tiny_checkpoint(scratch / "ckpt", seed=seed)
        try:
            os.replace(built, target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
