"""File systems and atomic commits (pyarrow.fs): local paths, ``s3://``, ``gs://``.

One module per responsibility, every name importable from here:

- :mod:`.locations`: :class:`Location` (a directory on some file system), :func:`locate`, and the
  small reads and probes (:func:`is_file`, :func:`read_bytes`, :func:`read_json_object`);
- :mod:`.commits`: a file becomes visible whole or not at all (:func:`write_bytes_atomic`,
  :func:`write_parquet_atomic`, :class:`ParquetStreamWriter`, :func:`spill_path` +
  :func:`publish_file`); a full disk is one :class:`StorageFullError`;
- :mod:`.listing`: committed files listed (:func:`list_files`), crashed writers' temporaries removed
  (:func:`remove_temporaries`), folders removed and files moved aside.
"""

from __future__ import annotations

from .commits import (
    FULL_ERRNOS,
    TMP_NAME,
    TMP_PREFIX,
    ParquetStreamWriter,
    StorageFullError,
    discard_spill,
    publish_file,
    spill_path,
    temporary_name,
    write_bytes_atomic,
    write_parquet_atomic,
)
from .listing import (
    NESTED_ROOT_FILES,
    list_files,
    move_aside,
    nested_roots,
    remove_temporaries,
    remove_tree,
)
from .locations import (
    Location,
    is_file,
    is_symlink,
    locate,
    makedirs,
    read_bytes,
    read_json_object,
    remove_quietly,
)

__all__ = [
    "FULL_ERRNOS",
    "NESTED_ROOT_FILES",
    "TMP_NAME",
    "TMP_PREFIX",
    "Location",
    "ParquetStreamWriter",
    "StorageFullError",
    "discard_spill",
    "is_file",
    "is_symlink",
    "list_files",
    "locate",
    "makedirs",
    "move_aside",
    "nested_roots",
    "publish_file",
    "read_bytes",
    "read_json_object",
    "remove_quietly",
    "remove_temporaries",
    "remove_tree",
    "spill_path",
    "temporary_name",
    "write_bytes_atomic",
    "write_parquet_atomic",
]
