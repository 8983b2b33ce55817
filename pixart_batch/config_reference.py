"""README's config reference, generated from the fields' facts so that it cannot drift from them.

:func:`reference_markdown` renders, per config section, a table of its fields: the dotted name with
its range (``generation.seed: in [0, 2**63)``, the lines of :func:`pixart_batch.config_ranges.reference`),
the type, the default, the role, the CLI flag and the help. The stages share one table: ``stages.*.x``
is field ``x`` of every stage, with each stage's default or role where they differ. README.md holds it
between two marker comments; ``python -m pixart_batch.config_reference --write README.md`` regenerates
it and ``--check`` (as ``tests/test_config_fields.py``) fails when README differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import RunConfig, get_dotted
from .config_fields import Leaf, leaves
from .config_tables import STAGES, ranges

START = (
    "<!-- config-reference: start (generated: python -m pixart_batch.config_reference --write README.md) -->"
)
END = "<!-- config-reference: end -->"
COMMAND = "python -m pixart_batch.config_reference --write README.md"
"""The command that regenerates README's config reference."""
COLUMNS = ("field: range", "type", "default", "role", "flag", "what it does")


@dataclasses.dataclass
class Row:
    """One row of a section's table: a field, or field ``x`` of every stage (``stages.*.x``, its
    ``leaves`` one per stage, in the order of ``stages``)."""

    name: str
    leaves: list[Leaf] = dataclasses.field(default_factory=list)
    stages: list[str] = dataclasses.field(default_factory=list)


def reference_markdown(cls: type = RunConfig) -> str:
    """The config reference of ``cls`` (a :class:`RunConfig` or a subclass), as README holds it."""
    blocks = []
    config = cls()
    hints = typing.get_type_hints(cls)
    for section in dataclasses.fields(cls):
        kind = hints[section.name]
        intro = _first_paragraph(kind.__doc__ if _documented(kind) else "")
        lines = [f"**`{section.name}`**" + (f": {intro}" if intro else "")]
        if section.name == STAGES:
            lines += [""] + _stage_list(kind)
        lines += ["", _row(COLUMNS), _row(("---",) * len(COLUMNS))]
        lines += [_cells(row, config, cls) for row in _rows(kind, section.name + ".")]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _documented(kind: type) -> bool:
    """Whether a class has a docstring of its own (a dataclass without one gets its signature)."""
    return not (kind.__doc__ or f"{kind.__name__}(").startswith(f"{kind.__name__}(")


def _first_paragraph(text: str | None) -> str:
    return _markdown(" ".join((text or "").strip().split("\n\n")[0].split()))


def _markdown(text: str) -> str:
    """reST-ish help (``code``) as Markdown table text (`code`, ``|`` escaped)."""
    return text.replace("``", "`").replace("|", "\\|")


def _stage_list(kind: type) -> list[str]:
    return [
        f"- `{item.name}`: {_markdown(item.metadata.get('help', ''))}" for item in dataclasses.fields(kind)
    ]


def _rows(kind: type, prefix: str) -> list[Row]:
    """The section's fields in order; under ``stages``, a field of every stage is one ``stages.*.x`` row."""
    if prefix != STAGES + ".":
        return [Row(leaf.name, [leaf]) for leaf in leaves(kind, prefix)]
    stages = typing.get_type_hints(kind)
    shared = set.intersection(*({item.name for item in dataclasses.fields(cls)} for cls in stages.values()))
    rows: dict[str, Row] = {}
    for leaf in leaves(kind, prefix):
        stage, field = leaf.name.split(".")[1:]
        name = f"{STAGES}.*.{field}" if field in shared else leaf.name
        row = rows.setdefault(name, Row(name))
        row.leaves.append(leaf)
        row.stages.append(stage)
    return list(rows.values())


def _cells(row: Row, config: Any, cls: type) -> str:
    """``field: range | type | default | role | flag | help`` of one row (each stage's value where
    the stages differ)."""
    table = ranges(cls)
    keys = [row.name] if row.name in table else [leaf.name for leaf in row.leaves if leaf.name in table]
    name = "<br>".join(f"`{key}: {table[key].describe()}`" for key in keys) or f"`{row.name}`"
    facts = [leaf.facts for leaf in row.leaves]
    defaults = [_value(get_dotted(config, leaf.name)) for leaf in row.leaves]
    roles = [fact.role.value if fact else "none" for fact in facts]
    flags = [f"`--{fact.flag.replace('_', '-')}`" if fact and fact.flag else "" for fact in facts]
    flag = _per_stage(row, flags)
    if row.stages and len(set(flags)) == 2 and "" in flags:  # a flag of some stages only
        given = [stage for stage, one in zip(row.stages, flags, strict=True) if one]
        flag = f"{next(filter(None, flags))} ({', '.join(given)})"
    help_text = _markdown(facts[0].help) if facts[0] else ""
    kind = _markdown(f"`{_type(row.leaves[0].hint)}`")
    return _row((name, kind, _per_stage(row, defaults), _per_stage(row, roles), flag, help_text))


def _per_stage(row: Row, values: list[str]) -> str:
    """One value, or each stage's (``clean: 256; encode, score: 32; ...``; stages grouped by value)."""
    if len(set(values)) <= 1:
        return values[0] if values else ""
    groups: dict[str, list[str]] = {}
    for stage, value in zip(row.stages, values, strict=True):
        groups.setdefault(value, []).append(stage)
    return "; ".join(f"{', '.join(stages)}: {value or '—'}" for value, stages in groups.items())


def _value(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{value.value if hasattr(value, 'value') else value!r}`"


def _type(hint: Any) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    shown = str(hint).replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"Optional\[(.*)\]$", r"\1 | None", re.sub(r"Union\[(.*), (.*)\]$", r"\1 | \2", shown))


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def replace_reference(text: str, reference: str) -> str:
    """``text`` (README) with what lies between the marker comments replaced by ``reference``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no config reference markers ({START} ... {END})")
    return text[: start + len(START)] + "\n\n" + reference + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """``--write README.md``: regenerate the reference; ``--check README.md``: exit 1 when it differs."""
    parser = argparse.ArgumentParser(prog="python -m pixart_batch.config_reference", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="README", help="regenerate the reference in this file")
    mode.add_argument("--check", metavar="README", help="exit 1 when this file's reference is stale")
    args = parser.parse_args(argv)
    path = Path(args.write or args.check)
    text = path.read_text(encoding="utf-8")
    wanted = replace_reference(text, reference_markdown())
    if args.write:
        path.write_text(wanted, encoding="utf-8")
        return 0
    if wanted != text:
        print(f"{path}: the config reference is stale; run {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
