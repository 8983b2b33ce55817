"""Class × template files (``.yaml`` / ``.yml``): classes and prompt templates expanded into labelled records.

::

    classes:                       # class name → its synonyms / descriptions (a list, one string, or
      tabby cat: [tabby cat, tabby]  #   nothing: the name itself)
      goldfish:
    templates: ["a photo of a {}", "a close-up photo of a {}"]   # each holds one {}
    negative_prompt: "blurry, text"    # optional, every record's negative prompt
    aspect_ratios: ["1:1", "3:4"]      # optional, "h:w"; each record's ratio is picked by its id
    images_per_class: 8                # optional: records per class (default: one per synonym × template)

Each record is ``template.format(synonym)`` labelled with its class name; its ``template`` is the
template's index. The combinations of a class run template by template, synonym by synonym; with
``images_per_class`` the class's records take them round-robin (record ``i``: combination ``i mod C``,
repeat ``i div C``). A record's id is ``c`` + 16 hex digits of the sha256 of its class name (as
written), synonym, template text and repeat (and its ratio): never of positions, so adding classes,
synonyms or templates leaves every existing id (and image) alone. The ratio is picked from
``aspect_ratios`` by the same digest (deterministic, about even, and stable when the file grows).
Each record makes ``generation.images_per_prompt`` images, as any prompt does.

A class name is a label (:func:`~.fields.label_of`: one line of visible text, compared in Unicode NFC;
two names that are one class that way are refused). The file's record count (classes × synonyms ×
templates, or classes × ``images_per_class``; aspect ratios pick, they do not multiply) is known
from the parsed file alone (:attr:`ClassFile.records`): a file of more than :data:`MAX_RECORDS`
records is refused before one record is made.
"""

from __future__ import annotations

import hashlib
import os
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pixart_batch.parsing import DuplicateKeyError, load_yaml

from .fields import label_of
from .flags import parse_ratio
from .ids import IdMaker
from .records import Entry, PromptRecord, fail, no_nul, quote
from .source import Tally, open_binary

KEYS = ("classes", "templates", "negative_prompt", "aspect_ratios", "images_per_class")
MAX_FILE_BYTES = 16 * 2**20
MAX_IMAGES_PER_CLASS = 1_000_000
MAX_RECORDS = 10_000_000
"""Records one class × template file may expand to. Each record is expanded, hashed and checked by every
pass over the file (about 5 µs each, and 8 bytes of the scan's id check): 10 million records (8 ×
ImageNet-1k) take about a minute per pass and 80 MB. Larger sets are split over several files, each
generated into the same output (its classes are appended)."""


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """The 1-based line of each top-level key and each class name (``("classes", NAME)``)."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            lines[(str(key.value),)] = key.start_mark.line + 1
            if key.value == "classes" and isinstance(value, yaml.MappingNode):
                for name, _ in value.value:
                    lines[("classes", str(name.value))] = name.start_mark.line + 1
    return lines


def _one_placeholder(template: str) -> bool:
    try:
        parsed = string.Formatter().parse(template)
        fields = [(name, spec, conversion) for _, name, spec, conversion in parsed if name is not None]
    except ValueError:
        return False
    return fields == [("", "", None)]


def _strings(value: Any, what: str, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    texts = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            shown = quote(item) if isinstance(item, str) else type(item).__name__
            fail(where, f"{what} must be non-empty strings (got {shown})")
        no_nul(item, what, where)
        if item.strip() in texts:
            fail(where, f"{what} {quote(item.strip())} is given twice")
        texts.append(item.strip())
    return texts


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).digest()


@dataclass(frozen=True)
class ClassEntry:
    """One class of a class × template file, checked."""

    written: str
    """The class name as written (stripped): a record's default text and part of its id."""
    label: str
    """The class name as a label (NFC)."""
    texts: tuple[str, ...]
    """Its synonyms (or the name itself)."""
    where: str
    """``FILE:LINE`` of its name."""


@dataclass(frozen=True)
class ClassFile:
    """A class × template file parsed and checked, before any record is made."""

    name: str
    classes: tuple[ClassEntry, ...]
    templates: tuple[str, ...]
    negative: str | None
    ratios: tuple[tuple[str, float], ...]
    per_class: int | None

    def count_of(self, entry: ClassEntry) -> int:
        """The records of one class."""
        return self.per_class if self.per_class is not None else len(self.templates) * len(entry.texts)

    @property
    def records(self) -> int:
        """The records expansion yields (exactly), counted without making one."""
        return sum(self.count_of(entry) for entry in self.classes)

    def describe(self) -> str:
        """What ``plan`` says of the file: its classes and records, counted before expansion."""
        counted = f"{len(self.classes):,} classes → {self.records:,} records, counted before expansion"
        return f"{self.name}: {counted} (at most {MAX_RECORDS:,} per class × template file)"

    def check_size(self) -> None:
        """Refuse a file of more than :data:`MAX_RECORDS` records (one line: the count and the limit)."""
        if self.records > MAX_RECORDS:
            counted = f"{len(self.classes):,} classes → {self.records:,} records"
            fail(
                self.name,
                f"{counted}, more than the {MAX_RECORDS:,} a class × template file may expand to; "
                "split its classes over several files (or lower images_per_class)",
            )


def _parse(path: str | os.PathLike[str], name: str, tally: Tally) -> tuple[Any, Callable[..., str]]:
    """The file's YAML (at most :data:`MAX_FILE_BYTES`) and the ``at(*keys)`` of its ``FILE:LINE``s."""
    with open_binary(path, tally) as stream:
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        fail(name, f"a class × template file is at most {MAX_FILE_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(name, f"not UTF-8 text (byte {exc.start + 1})")
    import yaml

    try:
        spec = load_yaml(text)
    except DuplicateKeyError as exc:
        first = f" (first on line {exc.first})" if exc.first != exc.line else ""
        fail(f"{name}:{exc.line}", exc.message + first)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        fail(where, f"not valid YAML ({getattr(exc, 'problem', None) or 'unreadable'})")
    lines = _lines(text)

    def at(*keys: str) -> str:
        line = lines.get(keys)
        return f"{name}:{line}" if line else name

    return spec, at


def read_class_file(path: str | os.PathLike[str], name: str, tally: Tally) -> ClassFile:
    """Parse and check a class × template file (errors: one line naming ``FILE:LINE``); nothing is
    expanded."""
    spec, at = _parse(path, name, tally)
    if not isinstance(spec, dict):
        fail(name, "a class × template file is a mapping with 'classes' and 'templates'")
    unknown = [str(key) for key in spec if key not in KEYS]
    if unknown:
        fail(at(unknown[0]), f"unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    classes, templates = spec.get("classes"), spec.get("templates")
    if not isinstance(classes, dict) or not classes:
        fail(at("classes"), "'classes' must be a non-empty mapping of class name → synonyms")
    if not isinstance(templates, list) or not templates:
        fail(at("templates"), "'templates' must be a non-empty list like [\"a photo of a {}\"]")
    templates = _strings(templates, "templates", at("templates"))
    for template in templates:
        if not _one_placeholder(template):
            fail(
                at("templates"),
                f"template {quote(template)} must hold exactly one {{}} (where the class text goes)",
            )
    negative = spec.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        fail(at("negative_prompt"), f"'negative_prompt' must be a string, not {type(negative).__name__}")
    if negative is not None:
        no_nul(negative, "'negative_prompt'", at("negative_prompt"))
        negative = negative.strip()
    ratio_texts = spec.get("aspect_ratios") or []
    if not isinstance(ratio_texts, list) or not all(isinstance(r, str) for r in ratio_texts):
        fail(at("aspect_ratios"), "'aspect_ratios' must be a list of \"h:w\" strings")
    ratios = tuple((r.strip(), parse_ratio(r, "'aspect_ratios'", at("aspect_ratios"))) for r in ratio_texts)
    per_class = spec.get("images_per_class")
    if per_class is not None and (
        isinstance(per_class, bool)
        or not isinstance(per_class, int)
        or not 1 <= per_class <= MAX_IMAGES_PER_CLASS
    ):
        fail(
            at("images_per_class"),
            f"'images_per_class' must be an integer in 1..{MAX_IMAGES_PER_CLASS} (got {per_class!r})",
        )
    entries = _classes(classes, at)
    return ClassFile(name, entries, tuple(templates), negative, ratios, per_class)


def _classes(classes: dict[Any, Any], at: Callable[..., str]) -> tuple[ClassEntry, ...]:
    """The checked classes: names are labels, and two names that are one label are refused."""
    entries: list[ClassEntry] = []
    first: dict[str, str] = {}
    for class_name, synonyms in classes.items():
        where = at("classes", str(class_name))
        if not isinstance(class_name, str):
            fail(
                where,
                f"class names must be strings, not {type(class_name).__name__} ({class_name!r}); quote it",
            )
        label = label_of(class_name, where)
        assert label is not None
        if label in first:
            fail(
                where,
                f"class {quote(label)} is given twice (first at {first[label]}; "
                "class names are compared stripped and in Unicode NFC)",
            )
        first[label] = where
        written = class_name.strip()
        given = synonyms is not None and synonyms != []
        texts = _strings(synonyms, f"synonyms of {quote(label)}", where) if given else [written]
        entries.append(ClassEntry(written, label, tuple(texts), where))
    return tuple(entries)


def count_class_file(path: str | os.PathLike[str]) -> ClassFile:
    """The checked class × template file at ``path``, its records counted and none made (for ``plan``)."""
    name = os.fsdecode(path)
    return read_class_file(path, name, Tally(name))


def iter_classes(path: str | os.PathLike[str], name: str, ids: IdMaker, tally: Tally) -> Iterator[Entry]:
    """Read a class × template file and yield its records (ids explicit: they never repeat); a file of
    more than :data:`MAX_RECORDS` records is refused before the first."""
    parsed = read_class_file(path, name, tally)
    parsed.check_size()
    del ids  # ids are explicit (derived from the class, synonym, template and repeat)
    templates, ratios, negative = parsed.templates, parsed.ratios, parsed.negative
    for entry in parsed.classes:
        where, label = entry.where, entry.label
        combos = [(index, template, text) for index, template in enumerate(templates) for text in entry.texts]
        for number in range(parsed.count_of(entry)):
            index, template, text = combos[number % len(combos)]
            repeat = str(number // len(combos))
            base = _digest(entry.written, text, template, repeat)
            ratio_text, ratio = (
                ratios[int.from_bytes(base[:8], "big") % len(ratios)] if ratios else ("", None)
            )
            digest = _digest(entry.written, text, template, repeat, ratio_text) if ratios else base
            prompt = template.format(text).strip()
            prompt_id = f"c{digest[:8].hex()}"
            yield PromptRecord(prompt_id, prompt, negative, None, None, ratio, where, label, index), True
