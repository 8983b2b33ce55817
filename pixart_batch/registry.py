"""One registry mechanism for everything chosen by name: the executors, the model stages, the output formats.

An entry is the object itself or a lazy ``"module:attr"`` string, imported on the first :meth:`Registry.load`
(the config lists the executors' names without importing Ray; the stages import torch only when one is
asked for). Ray-free and torch-free: it imports nothing until an entry is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, KeysView, Mapping
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → objects, in the order they were registered. ``what`` names one entry in messages
    (``unknown executor 'x'; the executors are ray, local``)."""

    def __init__(self, what: str, entries: Mapping[str, T | str] | None = None, plural: str | None = None):
        self.what = what
        self.plural = plural or f"{what}s"
        self._entries: dict[str, T | str] = dict(entries or {})
        self._loaded: dict[str, T] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"

    def keys(self) -> KeysView[str]:
        """The names, in order: a live view (a name registered later shows in it)."""
        return self._entries.keys()

    def unknown(self, name: object) -> KeyError:
        """The one-line error for a name not registered."""
        return KeyError(f"unknown {self.what} {name!r}; the {self.plural} are {', '.join(self._entries)}")

    def load(self, name: str) -> T:
        """The object registered as ``name`` (a lazy entry imported now, once); an unknown name raises
        :meth:`unknown`'s ``KeyError``."""
        if name not in self._entries:
            raise self.unknown(name)
        if name not in self._loaded:
            entry = self._entries[name]
            self._loaded[name] = cast(T, _import(entry)) if isinstance(entry, str) else entry
        return self._loaded[name]

    __getitem__ = load

    def values(self) -> Iterator[T]:
        """Every entry's object, in order (lazy entries imported)."""
        return (self.load(name) for name in list(self._entries))

    def items(self) -> Iterator[tuple[str, T]]:
        """``(name, object)`` pairs, in order (lazy entries imported)."""
        return ((name, self.load(name)) for name in list(self._entries))

    def get(self, name: str, default: T | None = None) -> T | None:
        """The object registered as ``name``, or ``default``."""
        return self.load(name) if name in self._entries else default

    def is_loaded(self, name: str) -> bool:
        """Whether ``name``'s object is at hand (an object entry, or a lazy one loaded already)."""
        return name in self._loaded or (name in self._entries and not isinstance(self._entries[name], str))

    def register(self, name: str, target: T | str) -> Callable[[], None]:
        """Add ``target`` (the object or ``"module:attr"``) as ``name``; returns the function that removes it
        again (only if ``name`` still holds this entry). Refuses a name taken."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered already")
        self._entries[name] = target

        def unregister() -> None:
            if self._entries.get(name) is target:
                del self._entries[name]
                self._loaded.pop(name, None)

        return unregister


def _import(target: str) -> object:
    """The object a ``"module:attr"`` string names."""
    module, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"lazy registry entry {target!r}: give it as 'module:attr'")
    return getattr(importlib.import_module(module), attr)


__all__ = ["Registry"]
