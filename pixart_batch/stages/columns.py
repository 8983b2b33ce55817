"""The columns each stage reads and writes, declared on the stage (as ray.data.llm's stages declare
theirs), so a new stage's inputs are found without reading its code.

A model stage class carries the declaration as class attributes (``reads``, ``writes``, ``drops``,
``keeps``); a batch function gets the same four attributes from :func:`stage_columns`. A column a
stage touches only in some runs is declared under its condition (:data:`CONDITIONS`), never left
out: ``columns(S.CAPTION, cfg=(S.NEGATIVE_CAPTION,))`` reads the negative caption only with CFG on.
``tests/test_stage_columns.py`` runs every stage on a real batch and holds the declarations true, and
checks :data:`pixart_batch.stages.pipeline.PIPELINE`'s order: each read made by an earlier stage.

Ray-free and torch-free (the expansion functions and the config layer may import it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

CFG = "cfg"
"""Classifier-free guidance is on (``generation.guidance_scale > 1``): negative prompts are encoded
and their embeddings attached."""
LABELLED = "labelled"
"""A labelled run (a class × template prompt file): the rows carry ``label`` and ``template``."""
SCORED = "scored"
"""``stages.score.enabled``: the scorer runs and the rows carry ``clip_score``."""
AESTHETIC = "aesthetic_head"
"""``stages.score.aesthetic_head`` is set (scored runs only): the rows carry ``aesthetic_score``."""
PRESENT = "present"
"""Read only when the batch has it (a column an earlier stage may or may not have added)."""
CONDITIONS = (CFG, LABELLED, SCORED, AESTHETIC, PRESENT)


@dataclass(frozen=True)
class Columns:
    """Column names: those a stage always reads (or writes), and those it does only under a condition."""

    always: tuple[str, ...] = ()
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``(condition, columns)`` pairs, a condition one of :data:`CONDITIONS`."""

    def under(self, conditions: Collection[str]) -> tuple[str, ...]:
        """The columns of a run where ``conditions`` hold (``PRESENT`` columns only if it is given)."""
        found = [*self.always]
        for condition, names in self.when:
            if condition in conditions:
                found += [name for name in names if name not in found]
        return tuple(found)

    def all(self) -> tuple[str, ...]:
        """Every column named, whatever the conditions."""
        return self.under(CONDITIONS)


def columns(*always: str, **when: Iterable[str]) -> Columns:
    """``Columns`` from names always used and, by keyword, names used under a condition:
    ``columns(S.CAPTION_KEY, cfg=(S.NEGATIVE_KEY,))``."""
    unknown = sorted(set(when) - set(CONDITIONS))
    if unknown:
        raise ValueError(
            f"unknown column condition {unknown[0]!r}; the conditions are {', '.join(CONDITIONS)}"
        )
    return Columns(tuple(always), tuple((condition, tuple(names)) for condition, names in when.items()))


class Declared(Protocol):
    """What a stage declares (a stage class's attributes, a batch function's after
    :func:`stage_columns`, or a :class:`Step` for a step that is neither)."""

    @property
    def reads(self) -> Columns: ...

    @property
    def writes(self) -> Columns: ...

    @property
    def drops(self) -> tuple[str, ...]: ...

    @property
    def keeps(self) -> bool: ...


@dataclass(frozen=True)
class Step:
    """The declaration of a pipeline step that is no stage of this package (a writer): its name and
    columns."""

    name: str
    reads: Columns = Columns()
    writes: Columns = Columns()
    drops: tuple[str, ...] = ()
    keeps: bool = True


F = TypeVar("F", bound=Callable[..., Any])


def as_columns(names: Columns | Iterable[str]) -> Columns:
    return names if isinstance(names, Columns) else Columns(tuple(names))


def stage_columns(
    reads: Columns | Iterable[str] = (),
    writes: Columns | Iterable[str] = (),
    drops: Iterable[str] = (),
    keeps: bool = True,
) -> Callable[[F], F]:
    """Declares a batch function's columns, as a stage class does with its class attributes: what it
    ``reads`` and ``writes``, the columns it ``drops``, and whether the columns it does not write pass
    through (``keeps``; False for a function that returns a batch of its own columns only)."""

    def declare(function: F) -> F:
        function.reads = as_columns(reads)  # type: ignore[attr-defined]  # declared on the function
        function.writes = as_columns(writes)  # type: ignore[attr-defined]
        function.drops = tuple(drops)  # type: ignore[attr-defined]
        function.keeps = keeps  # type: ignore[attr-defined]
        return function

    return declare


def declared(stage: object) -> Declared:
    """``stage``'s declaration; one that declares nothing raises (every stage declares its columns)."""
    missing = [name for name in ("reads", "writes", "drops", "keeps") if not hasattr(stage, name)]
    if missing:
        raise TypeError(
            f"{stage_name(stage)} declares no {', '.join(missing)} (see pixart_batch.stages.columns)"
        )
    found: Declared = stage  # type: ignore[assignment]  # checked above
    return found


def stage_name(stage: object) -> str:
    """A stage's name in messages: a class's or function's name, a :class:`Step`'s own."""
    return str(getattr(stage, "__name__", None) or getattr(stage, "name", stage))


def chained(*stages: Declared) -> Step:
    """The declaration of ``stages`` run one after another as one stage (``DenoiseDecode``): the reads
    no earlier one of them writes, every write not dropped later, every drop not written again."""
    reads: list[tuple[str | None, str]] = []
    writes: list[tuple[str | None, str]] = []
    drops: list[str] = []
    for stage in stages:
        written = {name for _, name in writes}
        reads += [pair for pair in _pairs(stage.reads) if pair[1] not in written and pair not in reads]
        writes = [pair for pair in writes if pair[1] not in stage.drops]
        writes += [pair for pair in _pairs(stage.writes) if pair not in writes]
        drops = [name for name in drops if name not in stage.writes.all()]
        drops += [name for name in stage.drops if name not in drops]
    return Step(
        "+".join(stage_name(stage) for stage in stages), _from_pairs(reads), _from_pairs(writes), tuple(drops)
    )


def _pairs(names: Columns) -> list[tuple[str | None, str]]:
    return [(None, name) for name in names.always] + [
        (condition, name) for condition, group in names.when for name in group
    ]


def _from_pairs(pairs: list[tuple[str | None, str]]) -> Columns:
    conditions = list(dict.fromkeys(condition for condition, _ in pairs if condition is not None))
    return Columns(
        tuple(name for condition, name in pairs if condition is None),
        tuple((c, tuple(name for condition, name in pairs if condition == c)) for c in conditions),
    )
