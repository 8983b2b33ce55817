"""The tables derived from the config fields' facts (:mod:`.config_fields`), keyed by dotted names.

Nothing here is kept by hand: each table is read from the ``setting(...)`` of every leaf field of
:class:`~pixart_batch.config.RunConfig` (or of another config class given, as the tests do):

- :data:`ROLES` (re-exported by :mod:`pixart_batch.spec`): dotted field → :class:`Role`;
- :data:`RANGES` (re-exported by :mod:`pixart_batch.config_ranges`): numeric field → :class:`Range`;
- :data:`OVERRIDES` (re-exported by :mod:`pixart_batch.api`): CLI flag ``dest`` → the fields it sets.

A fact every stage shares is keyed ``stages.*.x`` (``stages.*.batch_size``); a stage whose fact differs
(``dtype``) or a field of one stage only (``stages.denoise.compile``) is keyed by its own name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from .config import RunConfig, get_dotted
from .config_fields import Facts, Range, Role, leaves, options

STAGES = "stages"
"""The section whose subsections are the stages (``stages.*.x``: field ``x`` of every stage)."""
V = TypeVar("V")


def fact_table(pick: Callable[[Facts], V | None], cls: type = RunConfig) -> dict[str, V]:
    """Dotted field → ``pick(facts)`` for every leaf field whose pick is not None, a fact every
    stage shares keyed once as ``stages.*.x`` (at the place of its first stage's field)."""
    found = {leaf.name: pick(leaf.facts) for leaf in leaves(cls) if leaf.facts is not None}
    table = {name: value for name, value in found.items() if value is not None}
    stages = {name.split(".")[1] for name in leaf_fields(cls) if name.startswith(STAGES + ".")}
    merged: dict[str, V] = {}
    for name, value in table.items():
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != STAGES:
            merged[name] = value
            continue
        each = [table.get(f"{STAGES}.{stage}.{parts[2]}") for stage in stages]
        if all(other == value for other in each):
            merged.setdefault(f"{STAGES}.*.{parts[2]}", value)
        else:
            merged[name] = value
    return merged


def leaf_fields(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of a (nested) config dataclass."""
    return [leaf.name for leaf in leaves(cls, prefix)]


def roles(cls: type = RunConfig) -> dict[str, Role]:
    return fact_table(lambda facts: facts.role, cls)


def ranges(cls: type = RunConfig) -> dict[str, Range]:
    return fact_table(lambda facts: facts.range, cls)


@dataclass(frozen=True)
class Flag:
    """A CLI flag that overrides config fields (``--batch-size``: ``stages.denoise.batch_size`` and
    ``stages.decode.batch_size``), with the facts and type of its first field."""

    dest: str
    keys: tuple[str, ...]
    facts: Facts
    hint: Any

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def kind(self) -> type:
        """``bool`` (a switch), ``int``, ``float`` or ``str``: what the flag's value is parsed as."""
        allowed = options(self.hint)
        return next((kind for kind in (bool, int, float) if kind in allowed), str)


def flags(cls: type = RunConfig) -> dict[str, Flag]:
    """Each CLI flag declared on the fields (``setting(flag=...)``), by ``dest``, in field order."""
    found: dict[str, Flag] = {}
    for leaf in leaves(cls):
        facts = leaf.facts
        if facts is None or facts.flag is None:
            continue
        known = found.get(facts.flag)
        keys = (*known.keys, leaf.name) if known else (leaf.name,)
        found[facts.flag] = Flag(facts.flag, keys, known.facts if known else facts, leaf.hint)
    return found


def overrides(cls: type = RunConfig) -> dict[str, tuple[str, ...]]:
    """Each CLI flag (its argparse ``dest``, the API's keyword argument of the same name) → the dotted
    config keys it overrides, in field order (``batch_size``: the DiT's and the VAE's)."""
    return {dest: flag.keys for dest, flag in flags(cls).items()}


ROLES: dict[str, Role] = roles()
"""Each config field (dotted name; ``stages.*.x``: that field of every stage) → its role."""
RANGES: dict[str, Range] = ranges()
"""Each numeric config field (dotted name; ``stages.*.x``: that field of every stage) → its range."""
FLAGS: dict[str, Flag] = flags()
"""Each CLI flag that overrides config fields, by ``dest`` (the CLI adds its flags from here)."""
OVERRIDES: dict[str, tuple[str, ...]] = {dest: flag.keys for dest, flag in FLAGS.items()}
"""Each CLI flag's ``dest`` → the dotted config keys it overrides."""


def _lookup(table: dict[str, V], name: str) -> V | None:
    if name in table:
        return table[name]
    parts = name.split(".")
    return table.get(f"{STAGES}.*.{parts[2]}") if len(parts) == 3 and parts[0] == STAGES else None


def role_of(name: str) -> Role | None:
    """The role of dotted field ``name`` (None: no such field)."""
    return _lookup(ROLES, name)


def range_of(name: str) -> Range | None:
    """The range of dotted field ``name`` (``stages.denoise.batch_size``: the entry of
    ``stages.*.batch_size``)."""
    return _lookup(RANGES, name)


def default_of(name: str) -> Any:
    """The default value of a dotted config field (``stages.denoise.step_cache`` → ``"none"``)."""
    value = get_dotted(RunConfig(), name)
    return value.value if isinstance(value, Enum) else value


def check_classified(cls: type = RunConfig) -> None:
    """Raise if a config field has no role: a plain field instead of a ``setting(..., role=...)``
    (a new option cannot silently escape the store key or the settings guard)."""
    missing = [leaf.name for leaf in leaves(cls) if leaf.facts is None]
    if missing:
        raise TypeError(
            f"config fields without a role (declare each with setting(role=...)): {', '.join(missing)}"
        )


def reference(cls: type = RunConfig) -> list[str]:
    """``name: range`` for every numeric field (``stages.*.x`` for every stage's), as the README's
    config reference lists them."""
    return [f"{name}: {allowed.describe()}" for name, allowed in ranges(cls).items()]
