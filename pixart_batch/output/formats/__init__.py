"""The output formats (``output.format``): a new format is one module here and one line in :data:`FORMATS`."""

from __future__ import annotations

from ...storage import Location
from .base import DATA_DIR, DATA_GLOB, Damaged, OutputFormat, ShardWriter, check_parquet, find_damaged
from .parquet import ParquetFormat
from .webdataset import WebDatasetFormat

FORMATS: dict[str, type[OutputFormat]] = {
    "parquet": ParquetFormat,
    "webdataset": WebDatasetFormat,
}
"""``output.format`` → its :class:`OutputFormat`."""

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


__all__ = [
    "DATA_DIR",
    "DATA_GLOB",
    "DEFAULT_FORMAT",
    "FORMATS",
    "Damaged",
    "OutputFormat",
    "ParquetFormat",
    "ShardWriter",
    "WebDatasetFormat",
    "check_parquet",
    "detect_format",
    "find_damaged",
    "make_format",
]
