"""The columns the stages declare (:mod:`pixart_batch.stages.columns`): every column a stage reads is
made by the source or an earlier stage in the pipeline's order, under every combination of conditions;
and the declarations are true: each stage, run on a real batch of the tiny checkpoint, reads only the
columns it declares (all that it declares always) and writes what it declares, nothing else."""

from __future__ import annotations

from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import tiny_config

from pixart_batch import schema as S
from pixart_batch.expansion import add_sizes, expand_images, prompt_chunk
from pixart_batch.prompts import PromptRecord
from pixart_batch.stages import STAGES
from pixart_batch.stages.clean import CaptionCleaner
from pixart_batch.stages.columns import (
    AESTHETIC,
    CFG,
    CONDITIONS,
    LABELLED,
    PRESENT,
    SCORED,
    chained,
    columns,
    declared,
    stage_columns,
    stage_name,
)
from pixart_batch.stages.decode import Decoder
from pixart_batch.stages.denoise import Denoiser
from pixart_batch.stages.generate import DenoiseDecode
from pixart_batch.stages.pipeline import PIPELINE, WRITE_IMAGES, WRITE_PLAN, Phase
from pixart_batch.stages.rows import attach_embeddings, caption_rows, clean_and_size, encode_images
from pixart_batch.stages.write import ImageEncoder

RUN_CONDITIONS = [
    frozenset(chosen)
    for size in range(5)
    for chosen in combinations((CFG, LABELLED, SCORED, AESTHETIC), size)
    if AESTHETIC not in chosen or SCORED in chosen  # a head is used only by a scored run
]


def _ends(phase: Phase, conditions: frozenset[str]) -> set[str]:
    """The columns of the rows ``phase`` ends with, checking each stage's reads on the way."""
    if phase.after is None:
        available: set[str] = set()
    else:
        (after,) = [p for p in PIPELINE if p.name == phase.after]
        available = _ends(after, conditions)
    for stage in phase.runs(conditions):
        columns = declared(stage)
        missing = [name for name in columns.reads.under(conditions) if name not in available]
        assert not missing, f"{phase.name}: {stage_name(stage)} reads {missing}, made by no earlier stage"
        kept = available if columns.keeps else set()
        available = (kept | set(columns.writes.under(conditions))) - set(columns.drops)
    return available


@pytest.mark.parametrize("conditions", RUN_CONDITIONS, ids=lambda c: "+".join(sorted(c)) or "plain")
def test_every_read_is_made_earlier(conditions):
    for phase in PIPELINE:
        _ends(phase, conditions)


def test_present_reads_are_made_by_some_stage():
    """A column read only when present is made somewhere (not a misspelt name)."""
    made = {name for phase in PIPELINE for s in phase.stages for name in declared(s).writes.all()}
    for phase in PIPELINE:
        for stage in phase.stages:
            present = dict(declared(stage).reads.when).get(PRESENT, ())
            assert set(present) <= made, (stage_name(stage), sorted(set(present) - made))


def test_declarations_name_schema_columns_and_known_conditions():
    names = {value for name, value in vars(S).items() if name.isupper() and isinstance(value, str)}
    names |= set(S.BUSY_COLUMNS.values())
    stages = [*STAGES.values(), CaptionCleaner, ImageEncoder, add_sizes]
    stages += [stage for phase in PIPELINE for stage in phase.stages]
    for stage in stages:
        found = declared(stage)
        for group in (found.reads, found.writes):
            assert set(group.all()) <= names, (stage_name(stage), sorted(set(group.all()) - names))
            assert {condition for condition, _ in group.when} <= set(CONDITIONS)
    with pytest.raises(ValueError, match="unknown column condition 'guided'"):
        columns(S.CAPTION, guided=(S.NEGATIVE_CAPTION,))
    with pytest.raises(TypeError, match="declares no reads"):
        declared(lambda batch: batch)


def test_denoise_decode_runs_in_place_of_the_two_stages():
    chain = chained(Denoiser, Decoder)
    assert (DenoiseDecode.reads, DenoiseDecode.writes, DenoiseDecode.drops) == (
        chain.reads,
        chain.writes,
        chain.drops,
    )
    assert S.LATENTS not in chain.writes.all() and S.LATENTS in chain.drops
    assert S.HEIGHT in chain.reads.all() and S.LATENTS not in chain.reads.all()


def test_the_writers_reads_are_the_schema():
    assert set(WRITE_PLAN.reads.under({LABELLED})) == set(S.plan_schema(True).names)
    assert set(WRITE_PLAN.reads.under(set())) == set(S.plan_schema(False).names)


# --------------------------------------------------------------------------- the declarations are true


class Recorder(dict):
    """A batch that records which of its columns a stage reads (its own writes read back are not
    reads; iterating, as a pass-through does, is not a read of a column either)."""

    def __init__(self, batch: dict[str, Any]) -> None:
        super().__init__(batch)
        self.read: set[str] = set()
        self.written: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        if key not in self.written:
            self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def pop(self, key: str, *default: Any) -> Any:
        if key in self and key not in self.written:
            self.read.add(key)
        return super().pop(key, *default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.written.add(key)
        super().__setitem__(key, value)


def _run(stage: Any, call: Any, batch: dict, conditions: set[str], every_read: bool = True) -> dict:
    """``call(recorded batch)`` held to ``stage``'s declaration under ``conditions``; its output."""
    found, recorded = declared(stage), Recorder(dict(batch))
    out = call(recorded)
    name, reads = stage_name(stage), found.reads
    assert recorded.read <= set(reads.under({*conditions, PRESENT})), (name, recorded.read - set(reads.all()))
    if every_read:
        assert set(reads.under(conditions)) <= recorded.read, (
            name,
            set(reads.under(conditions)) - recorded.read,
        )
    writes = set(found.writes.under(conditions))
    assert writes <= set(out), (name, "does not write", writes - set(out))
    assert set(out) - set(batch) <= writes, (name, "writes undeclared", set(out) - set(batch) - writes)
    assert not set(out) & set(found.drops), (name, "keeps", set(out) & set(found.drops))
    if found.keeps:
        assert set(batch) - set(found.drops) <= set(out), (name, "loses", set(batch) - set(out))
    return dict(out)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, _cache_dir) -> dict[str, Any]:
    """The tiny recipe with scores (tiny CLIP, an aesthetic head) and few steps, as one ``RunSpec``."""
    import torch
    from safetensors.torch import save_file

    from pixart_batch.spec import RunSpec
    from pixart_batch.tiny_clip import cached_tiny_clip

    cached_tiny_clip()
    head = tmp_path_factory.mktemp("head") / "head.safetensors"
    save_file({"weight": torch.randn(1, 16), "bias": torch.tensor([0.5])}, str(head))
    overrides: dict[str, object] = {"generation.num_inference_steps": 2, "stages.score.enabled": True}
    overrides.update({"stages.score.model": "tiny", "stages.score.aesthetic_head": str(head)})
    return {"spec": RunSpec.build(tiny_config(**overrides)), "store": tmp_path_factory.mktemp("store")}


def _staged(labelled: bool) -> dict:
    records = [
        PromptRecord(
            "p0", "A <b>red</b> fox", None, None, None, None, "f:1", label="fox" if labelled else None
        ),
        PromptRecord("p1", "a cat --hw", "blurry", 80, 96, None, "f:2", label="cat" if labelled else None),
        PromptRecord("p2", "一只猫", None, None, None, 0.5, "f:3", label="cat" if labelled else None),
    ]
    conditions = {LABELLED} if labelled else set()
    table = _run(
        prompt_chunk,
        lambda _: prompt_chunk(records, "", {"fox": 0, "cat": 1} if labelled else None).to_pydict(),
        {},
        conditions,
    )
    return {
        name: np.array(values, dtype=object if isinstance(values[0], str) else None)
        for name, values in table.items()
    }


def test_each_stage_does_what_it_declares(tiny_run, tmp_path):
    attached = _rows_stages(tiny_run["spec"], tiny_run["store"], tmp_path)
    _model_stages(tiny_run["spec"], attached)


def _rows_stages(spec: Any, store_root: Path, tmp_path: Path) -> dict:
    """The batch functions from the staged prompts to the rows with their embeddings attached."""
    import pyarrow as pa

    from pixart_batch.stages.encode import TextEncoder
    from pixart_batch.stages.rows import first_of_group
    from pixart_batch.stopping import StopFlag
    from pixart_batch.store import EmbeddingStore

    _staged(False)  # the unlabelled chunk: no label columns
    staged, on = _staged(True), {CFG, LABELLED}
    sizes = {"generation": spec.config.generation, "geometry": spec.geometry, "table": spec.table}
    _run(CaptionCleaner, CaptionCleaner(spec.clean_spec()), staged, on)
    _run(add_sizes, partial(add_sizes, **sizes), staged, on)
    prompts = _run(clean_and_size, partial(clean_and_size, spec=spec.clean_spec(), **sizes), staged, on)
    _run(caption_rows, partial(caption_rows, negatives=False), prompts, {LABELLED})
    captions = _run(caption_rows, partial(caption_rows, negatives=True), prompts, on)
    assert set(declared(first_of_group).writes.all()) == set() and declared(first_of_group).keeps
    encoded = _run(TextEncoder, TextEncoder(spec.encode_spec()), captions, on)
    store = EmbeddingStore(str(store_root), spec.store_identity()).open()
    first = dict(zip(encoded[S.CAPTION_KEY].tolist(), range(len(encoded[S.CAPTION_KEY])), strict=True))
    store.write_part(pa.table({k: [encoded[k][i] for i in first.values()] for k in S.STORE_COLUMNS}))
    images = _run(expand_images, partial(expand_images, images_per_prompt=2, run_seed=0), prompts, on)
    lookup = {"root": str(store_root), "identity": spec.store_identity(), "index": store.index()}
    lookup["stop"] = StopFlag(str(tmp_path / "out"), "run")
    _run(attach_embeddings, partial(attach_embeddings, **lookup, negatives=False), images, {LABELLED})
    return _run(attach_embeddings, partial(attach_embeddings, **lookup, negatives=True), images, on)


def _model_stages(spec: Any, attached: dict) -> None:
    """The model stages (and image encoding, the image writer's table) on the attached rows."""
    from pixart_batch.stages.score import Scorer

    on = {CFG, LABELLED, SCORED, AESTHETIC}
    latents = _run(Denoiser, Denoiser(spec.denoise_spec()), attached, on)
    pixels = _run(Decoder, Decoder(spec.decode_spec()), latents, on)
    both = _run(
        DenoiseDecode,
        DenoiseDecode(spec.denoise_spec(), spec.decode_spec(), 4),
        attached,
        on,
        every_read=False,
    )
    assert set(both) == set(pixels)
    scored = _run(Scorer, Scorer(spec.score_spec()), pixels, on)
    without_head = Scorer(spec.score_spec())
    without_head.head = None
    _run(Scorer, without_head, pixels, on - {AESTHETIC})
    _run(ImageEncoder, ImageEncoder("png", 90), scored, on)
    encoded = _run(encode_images, partial(encode_images, image_format="png", quality=90), scored, on)
    assert not encoded[S.ERROR].astype(bool).any()
    _image_writer_reads(spec, encoded)


def _image_writer_reads(spec: Any, batch: dict) -> None:
    """The image writer's table (``to_table``) reads only what :data:`WRITE_IMAGES` declares."""
    from pixart_batch.output.writers import to_table

    settings = {**spec.settings(), S.LABEL_NAMES_SETTING: ["fox", "cat"]}
    recorded = Recorder(batch)
    table = to_table(recorded, spec.row_constants(), settings)
    assert S.CLIP_SCORE in table.column_names and S.LABEL in table.column_names
    assert recorded.read <= set(WRITE_IMAGES.reads.all()), recorded.read - set(WRITE_IMAGES.reads.all())


def test_stage_columns_sets_the_declaration():
    @stage_columns(reads=(S.PROMPT,), writes=columns(S.CAPTION, cfg=(S.NEGATIVE_CAPTION,)), keeps=False)
    def stage(batch: dict) -> dict:
        return batch

    found = declared(stage)
    assert found.reads.all() == (S.PROMPT,) and found.writes.under(set()) == (S.CAPTION,)
    assert found.writes.under({CFG}) == (S.CAPTION, S.NEGATIVE_CAPTION) and not found.keeps
    assert Path(stage.__code__.co_filename).name == "test_stage_columns.py"  # the function itself, marked
