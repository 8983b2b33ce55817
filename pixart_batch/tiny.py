"""Tiny random PixArt checkpoints (α or Σ, any shipped scheduler) in the real diffusers layout.

Tests and the default demo run on them through the same ``from_pretrained`` code
that loads ``PixArt-alpha/PixArt-XL-2-1024-MS`` by hub id. Nothing is fetched:
the T5 tokenizer is a SentencePiece ``spiece.model`` + ``tokenizer_config.json``, as the
hub checkpoints ship it, whose Unigram vocabulary is built here from a fixed word list;
every weight is drawn from ``torch.Generator().manual_seed(seed)``, so the same
seed gives byte-identical safetensors files.

Sizes: the transformer has ``sample_size=32`` (latents 32², images 256², the
``ASPECT_RATIO_256_BIN`` table), the VAE the usual 8× downscale (four blocks).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

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


def _seeded_init_(module, generator: torch.Generator) -> None:
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


class TinySize(TypedDict):
    """The dimensions of a generated checkpoint."""

    dit_layers: int
    dit_heads: int
    dit_head_dim: int
    vae_channels: tuple[int, int, int, int]
    vae_groups: int
    t5_d_model: int


SIZES: dict[str, TinySize] = {
    # tiny: every test and the default demo (seconds on a CPU).
    "tiny": {
        "dit_layers": 2,
        "dit_heads": 2,
        "dit_head_dim": 8,
        "vae_channels": (8, 8, 16, 16),
        "vae_groups": 4,
        "t5_d_model": 32,
    },
    # small: the real block structure at a width where the DiT dominates a CPU run (benchmarks).
    "small": {
        "dit_layers": 8,
        "dit_heads": 6,
        "dit_head_dim": 64,
        "vae_channels": (32, 32, 64, 64),
        "vae_groups": 16,
        "t5_d_model": 64,
    },
}
VAE_SCALING = {"alpha": 0.18215, "sigma": 0.13025}
"""α uses the SD VAE (0.18215); Σ the SDXL VAE (0.13025)."""


def _base_scheduler_config() -> dict:
    """PixArt's shipped DPM-Solver++ scheduler (as in the hub checkpoints' scheduler_config.json)."""
    return {
        "algorithm_type": "dpmsolver++",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "solver_order": 2,
        "solver_type": "midpoint",
        "lower_order_final": True,
        "timestep_spacing": "linspace",
    }


def write_spiece_tokenizer(folder: str | os.PathLike) -> Path:
    """Write the T5 tokenizer exactly as PixArt's hub checkpoints ship it: a SentencePiece
    ``spiece.model`` (Unigram, T5's special ids, the ``nmt_nfkc`` normalizer) and a
    ``tokenizer_config.json`` — no ``tokenizer.json``. The pieces are :func:`tiny_vocab`.

    The normalizer's compiled rules come from sentencepiece itself (a throwaway training run
    on a few words): the same ``nmt_nfkc`` table T5's own ``spiece.model`` carries.
    """
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    scratch = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a cat on a mat", "the dog"] * 20),
        model_writer=scratch,
        vocab_size=16,
        model_type="unigram",
        normalization_rule_name="nmt_nfkc",
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    trained = model_pb2.ModelProto()
    trained.ParseFromString(scratch.getvalue())

    proto = model_pb2.ModelProto()
    proto.normalizer_spec.CopyFrom(trained.normalizer_spec)
    vocab = tiny_vocab()
    spec = proto.trainer_spec
    spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    spec.vocab_size = len(vocab)
    spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = 0, 1, 2, -1
    spec.pad_piece, spec.eos_piece, spec.unk_piece = "<pad>", "</s>", "<unk>"
    kinds = {
        "<pad>": model_pb2.ModelProto.SentencePiece.CONTROL,
        "</s>": model_pb2.ModelProto.SentencePiece.CONTROL,
        "<unk>": model_pb2.ModelProto.SentencePiece.UNKNOWN,
    }
    for piece, score in vocab:
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
        entry.type = kinds.get(piece, model_pb2.ModelProto.SentencePiece.NORMAL)

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    (target / "spiece.model").write_bytes(proto.SerializeToString())
    extra = [f"<extra_id_{i}>" for i in range(100)]
    config = {
        "additional_special_tokens": extra,
        "eos_token": "</s>",
        "extra_ids": 100,
        "model_max_length": 512,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    }
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return target


def build_tiny_checkpoint(
    directory: str | os.PathLike,
    seed: int = 0,
    family: str = "alpha",
    scheduler: str = "dpm-solver++",
    size: str = "tiny",
) -> Path:
    """Write a random PixArt checkpoint to ``directory`` (created; must not exist or be empty).

    ``family`` ``alpha`` or ``sigma`` (``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline`` in
    ``model_index.json``, the SD / SDXL VAE scaling); ``scheduler`` a ``generation.scheduler``
    option (the class shipped in ``scheduler/``, built ``from_config`` on PixArt's DPM-Solver++
    config, as LCM and DMD checkpoints ship theirs); ``size`` ``tiny`` or ``small``.

    The result loads with ``diffusers.PixArtAlphaPipeline`` / ``PixArtSigmaPipeline.from_pretrained``.
    The directory appears whole or not at all: it is built beside its final name and renamed.
    Every option and the path are checked before anything is imported or written.
    """
    from .errors import UserError

    dims = _checked_size(family, scheduler, size)
    target = Path(directory)
    try:
        _check_new_directory(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise UserError(f"{target}: cannot create the checkpoint directory ({exc.strerror or exc})") from None
    try:
        out = staging / "checkpoint"
        _tiny_pipeline(staging, seed, family, scheduler, dims).save_pretrained(out, safe_serialization=True)
        # The tokenizer exactly as the hub ships it (spiece.model + tokenizer_config.json), not
        # whatever this transformers version writes on save.
        shutil.rmtree(out / "tokenizer")
        write_spiece_tokenizer(out / "tokenizer")
        _make_deterministic(out)
        if target.exists():
            target.rmdir()
        os.replace(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _checked_size(family: str, scheduler: str, size: str) -> TinySize:
    """The dimensions of ``size``, once ``family``, ``scheduler`` and ``size`` are known options
    (a one-line :class:`~pixart_batch.errors.UserError` naming the flag otherwise)."""
    from .errors import UserError
    from .families import FAMILY_NAMES, SCHEDULERS

    if family not in FAMILY_NAMES:
        raise UserError(f"--family: must be one of {', '.join(FAMILY_NAMES)}, got {family!r}")
    if scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler: must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if size not in SIZES:
        raise UserError(f"--size: must be one of {', '.join(SIZES)}, got {size!r}")
    return SIZES[size]


def _tiny_pipeline(staging: Path, seed: int, family: str, scheduler: str, dims: TinySize) -> Any:
    """The random pipeline, in memory: the tokenizer (written to ``staging`` and read back), the
    three models seeded from ``seed`` (text encoder, transformer, VAE, in that order) and the
    scheduler, in the family's pipeline class. Its progress bar is off: the caller saves it."""
    import diffusers
    import torch
    from transformers import T5Tokenizer
    from transformers.utils import logging as transformers_logging

    from .families import FAMILY_NAMES, SCHEDULERS

    tokenizer = T5Tokenizer.from_pretrained(write_spiece_tokenizer(staging / "tokenizer-source"))
    generator = torch.Generator().manual_seed(seed)
    text_encoder, transformer, vae = _tiny_models(len(tokenizer), family, dims)
    for module in (text_encoder, transformer, vae):
        _seeded_init_(module, generator)
    sched_cls = getattr(diffusers, SCHEDULERS[scheduler])
    accepted = inspect.signature(sched_cls.__init__).parameters
    sched = sched_cls(**{k: v for k, v in _base_scheduler_config().items() if k in accepted})
    pipeline_cls = getattr(diffusers, FAMILY_NAMES[family].pipeline_class)
    transformers_logging.disable_progress_bar()  # its "Writing model shards" bar is not this tool's output
    return pipeline_cls(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=sched
    )


def _tiny_models(vocab_size: int, family: str, dims: TinySize) -> tuple[Any, Any, Any]:
    """The text encoder (T5), the transformer (DiT) and the VAE of ``dims``, not yet seeded."""
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    d_model = dims["t5_d_model"]
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=8,
            d_ff=2 * d_model,
            num_layers=2,
            num_heads=d_model // 8,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
        )
    )
    transformer = PixArtTransformer2DModel(
        num_attention_heads=dims["dit_heads"],
        attention_head_dim=dims["dit_head_dim"],
        in_channels=4,
        out_channels=8,
        num_layers=dims["dit_layers"],
        cross_attention_dim=dims["dit_heads"] * dims["dit_head_dim"],
        sample_size=32,
        patch_size=2,
        caption_channels=d_model,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=dims["vae_channels"],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=dims["vae_groups"],
        sample_size=256,
        scaling_factor=VAE_SCALING[family],
    )
    return text_encoder, transformer, vae


def _check_new_directory(target: Path) -> None:
    """Refuse, in one line, a checkpoint directory that cannot be made: it is a file or a non-empty
    directory, or one of its parents is not a directory."""
    from .errors import UserError

    fix = "choose a new directory for the checkpoint"
    if target.is_dir():
        if any(target.iterdir()):
            raise UserError(f"{target}: exists and is not an empty directory; {fix}")
        return
    if target.exists() or target.is_symlink():
        raise UserError(f"{target}: exists and is not a directory; {fix}")
    for parent in target.parents:  # the nearest one that exists must be a directory
        if parent.is_dir():
            return
        if parent.exists() or parent.is_symlink():
            raise UserError(f"{target}: cannot be created, {parent} is not a directory; {fix}")


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
    root = os.environ.get("PIXART_BATCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "pixart_batch"
    )
    return Path(root)


def cached_tiny_checkpoint(
    seed: int = 0, family: str = "alpha", scheduler: str = "dpm-solver++", size: str = "tiny"
) -> Path:
    """The tiny checkpoint for ``seed``, built on first use and reused after.

    Concurrent first uses are safe: each builds in a private staging directory and
    the first rename wins; the others discard theirs.
    """
    suffix = "".join(
        f"-{part}"
        for part in (scheduler if scheduler != "dpm-solver++" else "", size if size != "tiny" else "")
        if part
    )
    target = default_cache_dir() / f"tiny-pixart-{family}-seed{seed}{suffix}-v2"
    if (target / "model_index.json").is_file():
        return target
    from .progress import say

    say(f"building the tiny checkpoint (first run only) -> {target}")
    return build_cached(
        target,
        "model_index.json",
        lambda d: build_tiny_checkpoint(d, seed=seed, family=family, scheduler=scheduler, size=size),
    )


def build_cached(target: Path, marker: str, build: Callable[[Path], Path]) -> Path:
    """``target`` in the cache, built by ``build(directory)`` unless ``target/marker`` exists. Concurrent
    first uses are safe: each builds in a private staging directory and the first rename wins."""
    if (target / marker).is_file():
        return target
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=_ensure(target.parent)))
    try:
        built = build(scratch / "build")
        try:
            os.replace(built, target)
        except OSError:
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
