"""What ``pixart-batch plan`` reads of a checkpoint: its geometry, family, DiT width and tokenizer
folder, from the run's own spec (configs only, no weights) or, when the hub cannot be reached, from
the facts the project ships for the published checkpoints (:mod:`pixart_batch.checkpoint_facts`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoint_facts import COMPARED, shipped_facts
from ..errors import CheckpointError, HubUnavailableError, shorten
from ..measured import REFERENCE_DIT_LAYERS

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..spec import RunSpec


@dataclass(frozen=True)
class CheckpointFacts:
    """What the estimate reads from a checkpoint: geometry, family, DiT width, tokenizer folder."""

    name: str
    sample_size: int
    vae_scale_factor: int
    text_dim: int
    dit_width: int
    dit_layers: int
    pipeline_class: str
    max_sequence_length: int
    tokenizer: Path | None
    uses_negative: bool = True
    """Whether the run encodes negative prompts (CFG on: ``RunSpec.uses_negative``)."""
    source: str = "the checkpoint's configs"
    notes: tuple[str, ...] = ()  # what the plan says about where the facts came from


def checkpoint_facts(config: RunConfig) -> CheckpointFacts:
    """The checkpoint's component configs (``model.components_from`` for the ones it lacks), read
    through the run's own spec from the configs only (:meth:`RunSpec.build` with ``weights=False``).
    A published hub checkpoint the hub cannot give (offline, no network) is planned from the facts
    the project ships (:data:`~pixart_batch.checkpoint_facts.PUBLISHED`); when the hub answers, its
    configs win and any disagreement with the shipped facts is noted."""
    from ..spec import RunSpec

    shipped = shipped_checkpoint_facts(config)
    try:
        facts = facts_of(RunSpec.build(config, weights=False))
    except HubUnavailableError as exc:
        if shipped is None:
            raise
        reason = (
            "HF_HUB_OFFLINE is set"
            if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0")
            else str(exc)
        )
        return replace(
            shipped,
            notes=(f"the hub was not reached ({shorten(reason, 160)}): planned from the shipped facts",),
        )
    if shipped is not None:
        differ = [
            f"{key} {getattr(shipped, key)} → {getattr(facts, key)}"
            for key in COMPARED
            if getattr(shipped, key) != getattr(facts, key)
        ]
        if differ:
            note = (
                f"{facts.name}: the hub's configs differ from the shipped facts ({', '.join(differ)}); "
                "the hub's are used"
            )
            facts = replace(facts, notes=(note,))
    return facts


def shipped_checkpoint_facts(config: RunConfig) -> CheckpointFacts | None:
    """The shipped facts of ``config``'s checkpoint, when it is a published one (None otherwise)."""
    row = shipped_facts(config.model.path, config.model.components_from)
    if row is None:
        return None
    return CheckpointFacts(
        name=config.model.path,
        **{key: row[key] for key in COMPARED},
        max_sequence_length=config.model.max_sequence_length or row["max_sequence_length"],
        tokenizer=None,
        uses_negative=config.generation.cfg,
        source="the shipped facts of the published checkpoint, pixart_batch/checkpoint_facts.py",
    )


def facts_of(spec: RunSpec) -> CheckpointFacts:
    """What the estimate needs of a run spec's checkpoint."""
    where = spec.model.checkpoint_of("transformer").local_dir / "transformer" / "config.json"
    try:
        transformer = json.loads(where.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{spec.model.name}: not a PixArt checkpoint (no readable transformer/config.json: {exc})"
        ) from None
    tokenizer = spec.model.checkpoint_of("tokenizer").local_dir / "tokenizer"
    return CheckpointFacts(
        name=spec.config.model.path,
        sample_size=spec.geometry.sample_size,
        vae_scale_factor=spec.geometry.vae_scale_factor,
        text_dim=spec.geometry.text_dim,
        dit_width=int(transformer.get("num_attention_heads", 16))
        * int(transformer.get("attention_head_dim", 72)),
        dit_layers=int(transformer.get("num_layers", REFERENCE_DIT_LAYERS)),
        pipeline_class=spec.family.pipeline_class,
        max_sequence_length=spec.max_sequence_length,
        tokenizer=tokenizer if tokenizer.is_dir() else None,
        uses_negative=spec.uses_negative,
    )
