"""A test-only third output format: JSONL rows, one image file per row, a Parquet key index per shard.

Registered by ``tests/test_format_contract.py`` (in-process) and ``tests/jsonl_cli.py`` (a CLI subprocess)
through :func:`pixart_batch.output.formats.register_format`, to hold the package to its format contract:
every per-format question is a method of :class:`~pixart_batch.output.formats.OutputFormat`. It overrides
only the abstract methods and what its layout makes its own (companions, uncommitted files); everything
else (columns, features, rewriting a shard, the card's features) is the interface's default. Layout::

    data/<run>/<task//1000>/<task:05d><n:04d>.jsonl         one JSON object per row (all but the image)
    data/<run>/<task//1000>/<task:05d><n:04d>.idx.parquet   the key index (keys, the settings in its metadata)
    data/<run>/<task//1000>/<task:05d><n:04d>.images/       <key>-<sha256[:16]>.<ext>: the images

Commits: each new image file, then the key index, then the ``.jsonl`` (its appearance is the commit).
An image's name holds its digest, so rewriting a shard never overwrites an image a committed row names.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pixart_batch import schema as S
from pixart_batch.errors import first_line
from pixart_batch.faults import stall
from pixart_batch.output.formats import DATA_GLOB, OutputFormat, ShardWriter, check_parquet
from pixart_batch.storage import is_file, list_files, read_bytes, write_bytes_atomic, write_parquet_atomic

if TYPE_CHECKING:
    import pyarrow as pa

IMAGE_FILE = "image_file"
"""The row's image file (a name in the shard's ``.images/`` folder), in its JSON line only."""
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class JsonlFormat(OutputFormat):
    name = "jsonl"
    suffix = ".jsonl"
    index_suffix = ".idx.parquet"
    images_suffix = ".images"
    companion_suffixes = (index_suffix,)

    def shard_name(self, run_id: str, task: int, number: int) -> str:
        return f"{run_id}/{task // 1000:04d}/{task:05d}{number:04d}{self.suffix}"

    def index_of(self, shard: str) -> str:
        return shard[: -len(self.suffix)] + self.index_suffix

    def images_of(self, shard: str) -> str:
        return shard[: -len(self.suffix)] + self.images_suffix

    def open_shard(
        self, name: str, settings: dict[str, Any] | None, row_group_size: int, schema: pa.Schema | None = None
    ) -> ShardWriter:
        return _JsonlShard(self, self.data_path(name), settings)

    # -- what is committed
    def key_files(self) -> list[str]:
        files = set(list_files(self.location, self.data_path()))
        return [self.index_of(shard) for shard in self.shard_files() if self.index_of(shard) in files]

    def key_file(self, shard: str) -> str:
        return self.index_of(shard)

    def shard_of(self, key_file: str) -> str:
        return key_file[: -len(self.index_suffix)] + self.suffix

    def companions(self, path: str) -> list[str]:
        return [self.index_of(path), *list_files(self.location, self.images_of(path))]

    def remove_uncommitted(self) -> int:
        """Key indexes and image files of a shard whose ``.jsonl`` was never committed."""
        committed = {shard[: -len(self.suffix)] for shard in self.shard_files()}
        removed = 0
        for path in list_files(self.location, self.data_path()):
            folder = posixpath.dirname(path)
            if path.endswith(self.index_suffix):
                stem = path[: -len(self.index_suffix)]
            elif folder.endswith(self.images_suffix):
                stem = folder[: -len(self.images_suffix)]
            else:
                continue
            if stem not in committed:
                self.location.fs.delete_file(path)
                removed += 1
        return removed

    # -- reading
    def _lines(self, path: str) -> list[dict[str, Any]]:
        text = read_bytes(self.location, path).decode()
        if text and not text.endswith("\n"):
            raise ValueError("truncated (no newline after its last row)")
        return [json.loads(line) for line in text.splitlines()]

    def check(self, path: str) -> str | None:
        index = self.index_of(path)
        if not is_file(self.location, index):
            return f"no key index ({posixpath.basename(index)})"
        reason = check_parquet(self.location, index, S.KEY)
        if reason:
            return f"unreadable key index: {reason}"
        try:
            import pyarrow.parquet as pq

            rows = self._lines(path)
            with self.location.fs.open_input_file(index) as handle:
                keys = pq.read_table(handle, columns=[S.KEY]).column(0).to_pylist()
            images = set(list_files(self.location, self.images_of(path)))
        except Exception as exc:
            return first_line(exc, with_type=True)
        if [row.get(S.KEY) for row in rows] != keys:
            return f"{len(rows)} rows in the shard, {len(keys)} keys in its index"
        for row in rows:
            if posixpath.join(self.images_of(path), str(row.get(IMAGE_FILE))) not in images:
                return f"row {row[S.KEY]}: no image file {row.get(IMAGE_FILE)}"
        return None

    def read_rows(self, path: str) -> Iterator[dict[str, Any]]:
        for row in self._lines(path):
            name = row.pop(IMAGE_FILE)
            data = read_bytes(self.location, posixpath.join(self.images_of(path), name))
            row[S.IMAGE] = {"bytes": data, "path": name}
            yield row

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.name,
            "data_files": f"{DATA_GLOB}{self.suffix}",
            "features": [],
            "layout": "JSONL shards (`data/<run>/<task//1000>/*.jsonl`, a test-only format): "
            "one JSON row per image, the image in the shard's `.images/` folder, "
            "`*.idx.parquet` beside each shard lists its keys.",
        }


class _JsonlShard(ShardWriter):
    """Rows held as JSON lines (the images are committed as they come); :meth:`commit` commits the key
    index, then the ``.jsonl``. :meth:`abort` removes the image files it added."""

    def __init__(self, owner: JsonlFormat, path: str, settings: dict[str, Any] | None) -> None:
        self.owner, self.loc, self.path, self.settings = owner, owner.location, path, settings
        self.keys: list[str] = []
        self.lines: list[str] = []
        self.added: list[str] = []
        self.closed = False

    def write(self, table: pa.Table) -> None:
        try:
            for row in table.to_pylist():
                data = row.pop(S.IMAGE)["bytes"]
                digest = hashlib.sha256(data).hexdigest()[:16]
                name = f"{row[S.KEY]}-{digest}.{EXTENSIONS[row[S.IMAGE_FORMAT]]}"
                target = posixpath.join(self.owner.images_of(self.path), name)
                if not is_file(self.loc, target):  # a rewrite leaves the committed images alone
                    write_bytes_atomic(self.loc, target, data)
                    self.added.append(target)
                self.lines.append(json.dumps({**row, IMAGE_FILE: name}, sort_keys=True))
                self.keys.append(row[S.KEY])
        except BaseException:
            self.abort()
            raise

    def commit(self) -> int:
        import pyarrow as pa

        try:
            data = "".join(line + "\n" for line in self.lines).encode()
            index = pa.table({S.KEY: self.keys}, schema=S.key_index_schema(self.settings))
            write_parquet_atomic(self.loc, self.owner.index_of(self.path), index)
            write_bytes_atomic(self.loc, self.path, data, before_commit=lambda: stall("shard-commit"))
            self.closed = True
            return len(data)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for path in self.added:
            try:
                self.loc.fs.delete_file(path)
            except OSError:
                pass
