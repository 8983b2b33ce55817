"""The output formats (``output.format``): a new format is one module here and one line in :data:`FORMATS`
(or, from outside the package, :func:`register_format`)."""

from __future__ import annotations

from collections.abc import Callable

from ...registry import Registry
from ...storage import Location
from .base import (
    DATA_DIR,
    DATA_GLOB,
    REWRITE_ROWS,
    Damaged,
    OutputFormat,
    ShardWriter,
    check_parquet,
    find_damaged,
    in_lists,
)
from .parquet import ParquetFormat
from .webdataset import WebDatasetFormat

FORMATS: Registry[type[OutputFormat]] = Registry(
    "output format", {"parquet": ParquetFormat, "webdataset": WebDatasetFormat}
)
"""``output.format`` → its :class:`OutputFormat` (read live: ``output.format``'s check and the CLI's
choices follow :func:`register_format`)."""

DEFAULT_FORMAT = "parquet"
"""An output whose format nothing records and whose folder holds no shard (and outputs made before
``output.format`` existed)."""


def make_format(name: str, location: Location) -> OutputFormat:
    """The format ``name`` (a key of :data:`FORMATS`) of the output at ``location``."""
    suffixes = tuple(s for cls in FORMATS.values() for s in (cls.suffix, *cls.companion_suffixes))
    return FORMATS[name](location, suffixes)


def detect_format(location: Location) -> str:
    """The format whose shards the output holds (:data:`DEFAULT_FORMAT` when it holds none)."""
    return next((name for name in FORMATS if make_format(name, location).detect()), DEFAULT_FORMAT)


def register_format(name: str, cls: type[OutputFormat]) -> Callable[[], None]:
    """Add the format ``cls`` as ``output.format: name`` (a plugin's, a test's); returns the function
    that removes it again. Refuses a name taken or one that is not ``cls.name``."""
    named = getattr(cls, "name", None)
    if named != name and name not in FORMATS:  # a taken name is refused first, by the registry
        raise ValueError(f"output format {name!r}: its class {cls.__name__} is named {named!r}")
    return FORMATS.register(name, cls)


__all__ = [
    "DATA_DIR",
    "DATA_GLOB",
    "DEFAULT_FORMAT",
    "FORMATS",
    "REWRITE_ROWS",
    "Damaged",
    "OutputFormat",
    "ParquetFormat",
    "ShardWriter",
    "WebDatasetFormat",
    "check_parquet",
    "detect_format",
    "find_damaged",
    "in_lists",
    "make_format",
    "register_format",
]
