"""T5 encoding into store rows: valid tokens only, in the encoder's dtype."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import schema as S
from ..errors import UserError
from ..faults import stall
from ..spec import EncodeSpec
from ..tensors import tensor_to_bytes
from .columns import Columns, columns

if TYPE_CHECKING:
    import torch


def load_text_encoder(spec: EncodeSpec):
    """The checkpoint's T5 encoder in ``spec.dtype``, its linear weights quantized as
    ``spec.quantization`` says.

    ``int8``: torchao weight-only int8 (CPU and GPU), applied after loading on the device.
    ``bnb-int8`` / ``bnb-nf4``: bitsandbytes through transformers' ``quantization_config`` (CUDA only).
    """
    from ..models import component_type, load_component, torch_dtype

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
        raise UserError(
            f"stages.encode.quantization {spec.quantization}: bitsandbytes needs a GPU "
            "(set stages.encode.num_gpus)"
        )
    cls = component_type(spec.model, "text_encoder")
    return cls.from_pretrained(
        spec.model.component("text_encoder").source,
        subfolder="text_encoder",
        torch_dtype=torch_dtype(spec.dtype),
        use_safetensors=True,
        quantization_config=quantization,
        device_map={"": 0},
    ).eval()


CALL_COST_TOKENS = 512
"""What one extra T5 call costs, in padded tokens: :func:`sub_batches` splits a batch only where
that saves more padding than this."""


def sub_batches(counts: list[int], call_cost: int = CALL_COST_TOKENS) -> list[list[int]]:
    """Row indices in sub-batches of similar token counts: sorted by count, then cut where the cut
    saves more padded tokens than ``call_cost`` (an exact split, by dynamic programming over the
    sorted rows). No sub-batch is larger than the batch, so peak memory never grows."""
    order = sorted(range(len(counts)), key=lambda i: counts[i])
    lengths = [counts[i] for i in order]
    best = [0] + [0] * len(order)  # best[j]: least cost of the first j sorted rows
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        best[end], cut[end] = min(
            (best[start] + (end - start) * lengths[end - 1] + call_cost, start) for start in range(end)
        )
    groups = []
    end = len(order)
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


class TextEncoder:
    """Encodes distinct captions (columns ``caption_key``, ``caption``) into store rows.

    A (sub-)batch is padded to its longest caption, not to ``max_sequence_length``: T5 with an
    attention mask gives the valid tokens the same values either way (up to rounding).
    Adds ``num_tokens``, ``truncated`` and ``embedding`` (raw bytes of tokens × d_model).
    """

    reads: ClassVar[Columns] = columns(S.CAPTION)
    writes: ClassVar[Columns] = columns(S.NUM_TOKENS, S.TRUNCATED, S.EMBEDDING, S.BUSY_COLUMNS["encode"])
    drops: ClassVar[tuple[str, ...]] = ()
    keeps: ClassVar[bool] = True

    def __init__(self, spec: EncodeSpec) -> None:
        import torch

        from ..models import load_component

        torch.set_grad_enabled(False)
        self.tokenizer = load_component(spec.model, "tokenizer")
        self.text_encoder = load_text_encoder(spec)
        self.device = spec.device
        self.max_sequence_length = spec.max_sequence_length

    def tokenize(self, captions: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids (truncated to ``max_sequence_length``, special tokens added, unpadded) and
        whether each caption was truncated — from one tokenizer pass (the overflow rows tell
        truncation; a tokenizer that reports none is asked for the full lengths separately)."""
        tokens = self.tokenizer(
            captions,
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_overflowing_tokens=True,
        )
        mapping = tokens.get("overflow_to_sample_mapping")
        if mapping is None:  # a tokenizer without overflow rows
            full = self.tokenizer(captions, add_special_tokens=True).input_ids
            return list(tokens.input_ids), [len(ids) > self.max_sequence_length for ids in full]
        ids: list[list[int]] = [[] for _ in captions]
        rows = [0] * len(captions)
        for ids_of_row, sample in zip(tokens.input_ids, mapping, strict=True):
            if rows[sample] == 0:
                ids[sample] = list(ids_of_row)
            rows[sample] += 1
        return ids, [n > 1 for n in rows]

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, list[int], list[bool]]:
        """``(embeddings [B, L, D], valid token counts [B], truncated [B])`` for one batch.

        Captions are tokenised once, sorted by length and encoded in sub-batches (:func:`sub_batches`)
        so padding stays small; T5 with an attention mask gives a caption's valid tokens the same
        values in any batch (up to rounding). Positions past a caption's count are zeros."""
        import torch

        ids, truncated = self.tokenize(captions)
        counts = [len(row) for row in ids]
        hidden: torch.Tensor | None = None
        for group in sub_batches(counts):
            padded = self.tokenizer.pad(
                {"input_ids": [ids[i] for i in group]}, padding="longest", return_tensors="pt"
            )
            with torch.inference_mode():
                out = self.text_encoder(
                    padded["input_ids"].to(self.device),
                    attention_mask=padded["attention_mask"].to(self.device),
                )[0]
            if hidden is None:
                hidden = out.new_zeros(len(captions), max(counts), out.shape[-1])
            for position, index in enumerate(group):
                hidden[index, : counts[index]] = out[position, : counts[index]]
        assert hidden is not None, "encode needs at least one caption"
        return hidden, counts, truncated

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        stall("encode")
        captions = batch[S.CAPTION].tolist()
        hidden, counts, truncated = self.encode(captions)
        batch[S.NUM_TOKENS] = np.array(counts, dtype=np.int32)
        batch[S.TRUNCATED] = np.array(truncated, dtype=bool)
        batch[S.EMBEDDING] = np.array(
            [tensor_to_bytes(hidden[i, :n]) for i, n in enumerate(counts)], dtype=object
        )
        batch[S.BUSY_COLUMNS["encode"]] = np.full(
            len(captions), (time.perf_counter() - start) / max(len(captions), 1)
        )
        return batch
