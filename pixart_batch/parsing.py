"""JSON and YAML parsing that refuses duplicate keys (both formats resolve them last-wins, silently).

``{"prompt": "a cat", "prompt": "a dog"}`` or a YAML ``model:`` mapping with ``path`` twice is a
mistake whose result nobody chose; :func:`loads_json` and :func:`load_yaml` raise
:class:`DuplicateKeyError` with the key and the lines of both occurrences instead, for the caller
to report as its own one-line error (``FILE:LINE: duplicate key 'prompt' (first on line 1)``).
"""

from __future__ import annotations

import functools
import json
from typing import IO, Any


class DuplicateKeyError(ValueError):
    """A mapping that gives one key twice: ``line`` (1-based, of the repeat) and ``first`` (of the first)."""

    def __init__(self, key: object, line: int, first: int) -> None:
        self.key, self.line, self.first = key, line, first
        self.message = f"duplicate key {str(key)!r}"
        """``duplicate key 'KEY'``, for a record whose source already names its line (a ``.jsonl`` line)."""
        super().__init__(f"line {line}: {self.message}")

    def describe(self, where: str) -> str:
        """``WHERE:LINE: duplicate key 'KEY' (first on line N)`` (no parenthesis when both are on one
        line)."""
        first = f" (first on line {self.first})" if self.first != self.line else ""
        return f"{where}:{self.line}: {self.message}{first}"


class _Repeated(Exception):
    """Raised by the pairs hook: some object repeats a key (where is found afterwards)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Repeated
    return result


def loads_json(text: str) -> Any:
    """``json.loads`` that raises :class:`DuplicateKeyError` for an object giving a key twice (at any
    depth)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except _Repeated:
        pass
    found = _first_json_duplicate(text)
    raise found if found is not None else DuplicateKeyError("?", 1, 1)


def _first_json_duplicate(text: str) -> DuplicateKeyError | None:
    """The first repeated key in document order (text valid JSON up to there): a scan of strings and
    brackets only, iterative (any nesting depth)."""
    stack: list[dict[str, int] | None] = []  # per open bracket: an object's keys → line, or None (array)
    expect_key = False
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if char == '"':
            end = index + 1
            while end < size and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            if stack and stack[-1] is not None and expect_key:
                key, line = json.loads(text[index : end + 1]), text.count("\n", 0, index) + 1
                keys = stack[-1]
                if key in keys:
                    return DuplicateKeyError(key, line, keys[key])
                keys[key] = line
                expect_key = False
            index = end
        elif char == "{":
            stack.append({})
            expect_key = True
        elif char == "[":
            stack.append(None)
            expect_key = False
        elif char in "]}":
            stack.pop()
            expect_key = False
        elif char == ",":
            expect_key = bool(stack) and stack[-1] is not None
        index += 1
    return None


def load_yaml(stream: IO[str] | str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` for a mapping giving a key twice (block or
    flow style, at any depth; ``<<`` merge keys are YAML's own way of overriding and stay allowed)."""
    import yaml

    return yaml.load(stream, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader subclass)


@functools.cache
def _unique_key_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get(key)
                    except TypeError:  # an unhashable key: SafeLoader's own error says so
                        continue
                    if first is not None:
                        raise DuplicateKeyError(key, line, first)
                    seen[key] = line
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader
