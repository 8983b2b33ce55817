"""A config field's facts, declared on the field itself: its role, its range, its CLI flag, its help.

Every leaf field of the config dataclasses (:mod:`pixart_batch.config`) is a :func:`setting`:

::

    seed: int = setting(0, role=Role.IMAGE, range=SEED, flag="seed", help="Run seed; ...")

and everything that used to be kept beside the dataclasses, keyed by dotted strings, is read from
there: the roles (``spec.ROLES``), the ranges (``config_ranges.RANGES``, checked here by
:func:`check_ranges` when a config is built), the CLI's config flags (``api.OVERRIDES``) and the README's
config reference (:mod:`pixart_batch.config_reference`). Adding a field is one ``setting(...)`` plus
its use. The tables themselves are derived in :mod:`pixart_batch.config_tables`; this module imports
no config class, so the config modules can import it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import ConfigError

FACTS = "pixart_batch"
"""The key of a field's :class:`Facts` in its ``dataclasses.field(metadata=...)``."""


class Role(str, Enum):
    """What a field changes, and so where its value is recorded (see :mod:`pixart_batch.spec`)."""

    EMBEDDING = "embedding"
    IMAGE = "image"
    CHECKPOINT = "checkpoint"
    OPERATIONAL = "operational"


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (either end may be open: excluded, or absent: unbounded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """``low`` itself is out of range (``> 0`` rather than ``>= 0``)."""
    high_open: bool = False
    """``high`` itself is out of range (``< 1000`` rather than ``<= 1000``)."""
    high_text: str | None = None
    """How ``high`` is written in messages (``2**63``)."""

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def describe(self, number: str = "") -> str:
        """``>= 1``, ``> 0``, ``in 1..100``, ``in (0, 1]``, ``in [0, 2**63)``; ``number`` (``a finite
        number``) first."""
        prefix = f"{number} " if number else ""
        high = self.high_text or shown(self.high)
        if self.high is None:
            return f"{prefix}{'>' if self.low_open else '>='} {shown(self.low)}"
        closed = not (self.low_open or self.high_open)
        if closed and isinstance(self.low, int) and isinstance(self.high, int):
            return f"{prefix}in {self.low}..{high}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{prefix}in {opening}{shown(self.low)}, {high}{closing}"


def at_least(low: float) -> Range:
    return Range(low)


def above(low: float) -> Range:
    return Range(low, low_open=True)


SEED = Range(0, 2**63, high_open=True, high_text="2**63")


@dataclass(frozen=True)
class Facts:
    """What one config field is, besides its type and default."""

    role: Role
    help: str
    """What the field does (reST-ish: ``code`` in double backticks), shown by the README and ``--help``."""
    range: Range | None = None
    """Every int / float field has one (lists and optional numbers included; :func:`check_ranges`)."""
    flag: str | None = None
    """The CLI flag's ``dest`` (``--batch-size`` → ``batch_size``) and the API's keyword argument; one
    flag may set several fields (``batch_size``: the DiT's and the VAE's)."""
    choices: Collection[str] | None = None
    """The values the CLI flag accepts (argparse ``choices``); the config checks them itself."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    role: Role,
    help: str,
    range: Range | None = None,
    flag: str | None = None,
    choices: Collection[str] | None = None,
) -> Any:
    """A config field with its :class:`Facts` (``dataclasses.field(default, metadata=...)``)."""
    facts = Facts(role=role, help=" ".join(help.split()), range=range, flag=flag, choices=choices)
    return dataclasses.field(default=default, metadata={FACTS: facts})


def restate(base: type, name: str, **changes: Any) -> Any:
    """Field ``name`` of dataclass ``base`` again, with some of its facts changed: how a stage whose
    field differs (``dtype`` is an embedding setting for the T5, an image one for the DiT) says so."""
    inherited = base.__dataclass_fields__[name]  # type: ignore[attr-defined]
    facts = dataclasses.replace(inherited.metadata[FACTS], **changes)
    default, factory = inherited.default, inherited.default_factory
    return dataclasses.field(default=default, default_factory=factory, metadata={FACTS: facts})


def facts_of(item: dataclasses.Field) -> Facts | None:
    """The facts declared on a field (None: a plain field, which :func:`check_ranges` and
    ``config_tables.check_classified`` refuse)."""
    found = item.metadata.get(FACTS)
    return found if isinstance(found, Facts) else None


@dataclass(frozen=True)
class Leaf:
    """One leaf field of a nested config dataclass: its dotted name, its class's field and type."""

    name: str
    owner: type
    field: dataclasses.Field
    hint: Any

    @property
    def facts(self) -> Facts | None:
        return facts_of(self.field)


def is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def leaves(cls: type, prefix: str = "") -> Iterator[Leaf]:
    """Every leaf field of a (nested) config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        name, hint = f"{prefix}{item.name}", hints[item.name]
        if is_section(hint):
            yield from leaves(hint, name + ".")
        else:
            yield Leaf(name, cls, item, hint)


def options(hint: Any) -> set[Any]:
    """The types a hint allows: ``int | list[int] | None`` → ``{int, list[int], NoneType, ...}`` with
    the element types of lists added (so ``int`` is among them)."""
    found = set(typing.get_args(hint)) if typing.get_origin(hint) is not list else set()
    found = found or {hint}
    return found | {
        arg for option in found if typing.get_origin(option) is list for arg in typing.get_args(option)
    }


def numeric_fields(cls: type, prefix: str = "") -> dict[str, bool]:
    """Dotted name → whether it is a float, of every int / float leaf field (lists of ints, and
    optional numbers, included) of a nested config dataclass."""
    return {
        leaf.name: float in options(leaf.hint)
        for leaf in leaves(cls, prefix)
        if options(leaf.hint) & {int, float}
    }


def check_ranges(config: Any, prefix: str = "") -> None:
    """Raise a one-line :class:`ConfigError` for the first number of ``config`` (a nested config
    dataclass instance) outside its field's range; a numeric field without a range is a programming error."""
    for item in dataclasses.fields(config):
        name, value = f"{prefix}{item.name}", getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, name + ".")
            continue
        numbers = [v for v in (value if isinstance(value, list) else [value]) if _is_number(v)]
        if not numbers:
            continue
        facts = facts_of(item)
        allowed = facts.range if facts else None
        if allowed is None:
            raise TypeError(f"config field {name} has no range (give it setting(..., range=...))")
        for number in numbers:
            if not allowed.contains(number):
                each = "each must be" if isinstance(value, list) else "must be"
                kind = "a finite number" if isinstance(number, float) else ""
                raise ConfigError(f"{name}: {shown(value)} is out of range ({each} {allowed.describe(kind)})")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value: object) -> str:
    """A number as messages write it (``0.5``, ``1e+06``, ``[1, 2]``)."""
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)
