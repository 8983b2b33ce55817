"""T5 encoding into store rows: valid tokens only, in the encoder's dtype."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .. import schema as S
from ..errors import UserError
from ..faults import stall
from ..spec import EncodeSpec
from ..tensors import tensor_to_bytes

if TYPE_CHECKING:
    import torch


def load_text_encoder(spec: EncodeSpec):
    """The checkpoint's T5 encoder in ``spec.dtype``, its linear weights quantized as ``spec.quantization`` says.

    ``int8``: torchao weight-only int8 (CPU and GPU), applied after loading on the device.
    ``bnb-int8`` / ``bnb-nf4``: bitsandbytes through transformers' ``quantization_config`` (CUDA only).
    """
    from ..models import _component_type, load_component, torch_dtype

    if spec.quantization == "none":
        return load_component(spec.model, "text_encoder", spec.dtype, spec.device)
    if spec.quantization == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        # Loaded on the CPU, then each linear layer is moved to the device and quantized there one at
        # a time, so the device never holds the whole encoder in bf16 (9.5 GB for T5-XXL: more than
        # the low-VRAM recipe's card); the rest (embeddings, norms) follows.
        encoder = load_component(spec.model, "text_encoder", spec.dtype, "cpu")
        quantize_(encoder, Int8WeightOnlyConfig(), device=spec.device)
        return encoder.to(spec.device).eval()
    from transformers import BitsAndBytesConfig

    if spec.quantization == "bnb-int8":
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype(spec.dtype)
        )
    if spec.device != "cuda":
        raise UserError(f"stages.encode.quantization {spec.quantization}: bitsandbytes needs a GPU (set stages.encode.num_gpus)")
    cls = _component_type(spec.model, "text_encoder")
    return cls.from_pretrained(
        spec.model.component("text_encoder").source,
        subfolder="text_encoder",
        torch_dtype=torch_dtype(spec.dtype),
        use_safetensors=True,
        quantization_config=quantization,
        device_map={"": 0},
    ).eval()


class TextEncoder:
    """Encodes distinct captions (columns ``caption_key``, ``caption``) into store rows.

    A batch is padded to its longest caption, not to ``max_sequence_length``: T5 with an
    attention mask gives the valid tokens the same values either way (up to rounding).
    Adds ``num_tokens``, ``truncated`` and ``embedding`` (raw bytes of tokens × d_model).
    """

    def __init__(self, spec: EncodeSpec) -> None:
        import torch

        from ..models import load_component

        torch.set_grad_enabled(False)
        self.tokenizer = load_component(spec.model, "tokenizer")
        self.text_encoder = load_text_encoder(spec)
        self.device = spec.device
        self.max_sequence_length = spec.max_sequence_length

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, list[int], list[bool]]:
        """``(embeddings [B, L, D], valid token counts [B], truncated [B])`` for one batch."""
        import torch

        tokens = self.tokenizer(
            captions,
            padding="longest",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        full_lengths = [len(ids) for ids in self.tokenizer(captions, add_special_tokens=True).input_ids]
        mask = tokens.attention_mask.to(self.device)
        with torch.inference_mode():
            hidden = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]
        counts = tokens.attention_mask.sum(dim=1).tolist()
        truncated = [n > self.max_sequence_length for n in full_lengths]
        return hidden, counts, truncated

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        stall("encode")
        captions = batch[S.CAPTION].tolist()
        hidden, counts, truncated = self.encode(captions)
        batch[S.NUM_TOKENS] = np.array(counts, dtype=np.int32)
        batch[S.TRUNCATED] = np.array(truncated, dtype=bool)
        batch[S.EMBEDDING] = np.array([tensor_to_bytes(hidden[i, :n]) for i, n in enumerate(counts)], dtype=object)
        batch["_busy_encode_s"] = np.full(len(captions), (time.perf_counter() - start) / max(len(captions), 1))
        return batch
