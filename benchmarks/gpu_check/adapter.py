"""Every call into pixart_batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from gpu_check.builders import run_spec
from gpu_check.common import DTYPE_NAMES, Row

# =============================================================================================


class PixartBatchStages:
    """pixart_batch's DiT and VAE stages (no Ray), called the way its Ray pipeline calls them."""

    def __init__(
        self,
        model_dir: Path,
        dtype: torch.dtype,
        device: str,
        embedding_dtype: torch.dtype,
        d_model: int,
        latent_channels: int,
        vae_scale_factor: int,
        steps: int,
        guidance: float,
    ) -> None:
        from pixart_batch import schema
        from pixart_batch.stages.decode import Decoder
        from pixart_batch.stages.denoise import Denoiser

        self.schema = schema
        self.embedding_dtype = embedding_dtype
        # The specs come from pixart_batch.spec.RunSpec, as in the pipeline (never built by hand).
        spec = run_spec(model_dir, dtype, device, embedding_dtype, d_model, steps, guidance)
        denoise, decode = spec.denoise_spec(), spec.decode_spec()
        expected = (d_model, latent_channels, vae_scale_factor)
        if (denoise.text_dim, decode.latent_channels, decode.vae_scale_factor) != expected:
            raise RuntimeError(
                "RunSpec's geometry "
                f"{denoise.text_dim, decode.latent_channels, decode.vae_scale_factor} != {expected}"
            )
        self.denoiser = Denoiser(denoise)
        self.decoder = Decoder(decode)

    def __call__(self, rows: list[Row], batch_size: int) -> list[np.ndarray]:
        """uint8 ``[H, W, 3]`` per row; ``batch_size`` rows per stage call (mixed buckets allowed)."""
        from pixart_batch.tensors import tensor_to_bytes

        def ints(values):
            return np.array(values, dtype=np.int64)

        def objects(values):  # element by element: bytes / str cells, never a 2-D array
            array = np.empty(len(values), dtype=object)
            for i, value in enumerate(values):
                array[i] = value
            return array

        S = self.schema
        images: list[np.ndarray] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]

            batch = {
                S.KEY: objects([f"row-{start + i:05d}" for i in range(len(chunk))]),
                S.ERROR: objects([""] * len(chunk)),
                S.SEED: ints([r.seed for r in chunk]),
                S.NUM_TOKENS: ints([r.embedding.shape[0] for r in chunk]),
                S.NEGATIVE_NUM_TOKENS: ints([r.negative.shape[0] for r in chunk]),
                S.PROMPT_EMBEDDING: objects(
                    [tensor_to_bytes(r.embedding.to(self.embedding_dtype)) for r in chunk]
                ),
                S.NEGATIVE_EMBEDDING: objects(
                    [tensor_to_bytes(r.negative.to(self.embedding_dtype)) for r in chunk]
                ),
                S.BUCKET_HEIGHT: ints([r.height for r in chunk]),
                S.BUCKET_WIDTH: ints([r.width for r in chunk]),
                S.HEIGHT: ints([r.height for r in chunk]),  # requested size = bucket: no resize back
                S.WIDTH: ints([r.width for r in chunk]),
            }
            batch = self.decoder(self.denoiser(batch))
            errors = [e for e in batch[S.ERROR].tolist() if e]
            if errors:  # the stages record failures per row instead of raising
                raise RuntimeError(f"{len(errors)} row(s) failed in the stages; first: {errors[0]}")
            for i in range(len(chunk)):
                shape = (int(batch[S.HEIGHT][i]), int(batch[S.WIDTH][i]), 3)
                images.append(np.frombuffer(batch[S.PIXELS][i], dtype=np.uint8).reshape(shape))
        return images

    def pipeline_class_name(self) -> str:
        """The diffusers pipeline class the Denoiser drives (the checkpoint's ``_class_name``)."""
        return type(self.denoiser.pipeline).__name__


def family_of_checkpoint(model_dir: Path) -> dict:
    """pixart_batch's family for a checkpoint: its name and T5 token limit."""
    from pixart_batch.families import family_of

    family = family_of(json.loads((model_dir / "model_index.json").read_text()), str(model_dir))
    return {
        "name": family.name,
        "pipeline_class": family.pipeline_class,
        "max_sequence_length": family.max_sequence_length,
    }


def quantize_text_encoder_int8(model, dtype: torch.dtype, device: str, max_sequence_length: int):
    """``(encoder, how)``: ``model`` (a T5 encoder in ``dtype`` on the CPU, as load_text_encoder loads
    it for int8) with its linear weights torchao weight-only int8 on ``device``.

    Runs pixart_batch's own ``stages.encode.load_text_encoder`` with ``quantization="int8"``, its
    ``models.load_component`` (which reads the checkpoint's ``text_encoder/`` folder: saving T5-XXL
    to disk is too slow here) swapped for one that returns ``model``. Should that API have changed,
    it falls back to the same call load_text_encoder makes, ``quantize_(model, Int8WeightOnlyConfig())``,
    and says so in ``how``.
    """
    try:
        from pixart_batch import models
        from pixart_batch.models import Component, ModelSource
        from pixart_batch.spec import EncodeSpec
        from pixart_batch.stages.encode import load_text_encoder

        source = ModelSource(
            "in-memory", (Component("text_encoder", "transformers", "T5EncoderModel", "in-memory"),)
        )
        spec = EncodeSpec(
            model=source,
            dtype=DTYPE_NAMES[dtype],
            device=device,
            max_sequence_length=max_sequence_length,
            quantization="int8",
        )
    except Exception as exc:  # noqa: BLE001 - the adapter is out of date: quantize the way it would
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig(), device=device)
        return (
            model.to(device),
            (
                "quantize_(model, Int8WeightOnlyConfig(), device=...) directly "
                f"(adapter: {type(exc).__name__}: {exc})"
            )[:300],
        )
    original = models.load_component
    models.load_component = lambda *args, **kwargs: model
    try:
        encoder = load_text_encoder(spec)
    finally:
        models.load_component = original
    return encoder, (
        f"pixart_batch.stages.encode.load_text_encoder(quantization='int8') on the in-memory "
        f"{DTYPE_NAMES[dtype]} module (its load_component swapped for one returning that module: "
        "T5-XXL is not saved to disk)"
    )


def e2e_commands(
    config: str, model: Path, prompts: Path, output: Path, steps: int | None
) -> tuple[list[str], list[str]]:
    """The CLI commands of the end-to-end run: ``generate`` and ``verify``."""
    generate = [
        sys.executable,
        "-m",
        "pixart_batch",
        "generate",
        "--config",
        config,
        "--model",
        str(model),
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        "--executor",
        "ray",
    ]
    if steps is not None:
        generate += ["--steps", str(steps)]
    return generate, [sys.executable, "-m", "pixart_batch", "verify", str(output)]


def e2e_report(output: Path) -> dict:
    """The numbers of ``OUTPUT/run_report.json`` this check reports."""
    report = json.loads((output / "run_report.json").read_text())
    keys = (
        "images_generated",
        "images_skipped",
        "images_failed",
        "images_per_second",
        "embeddings_encoded",
        "stage_seconds",
    )
    return {key: report.get(key) for key in keys}


E2E_CONFIG_GPU = "configs/one-gpu.yaml"
E2E_CONFIG_CPU = "configs/tiny.yaml"
E2E_MODULES = ("ray", "datasets", "polars")  # what pixart_batch's Ray pipeline imports beyond the stages

# ================================== end of the adapter =======================================
