"""``output.format: webdataset``: ``data/<run>/<task//1000>/<task:05d><n:04d>.tar`` (img2dataset's
numbering, one folder per run so names never collide), members ``KEY.png|jpg|webp`` (the image),
``KEY.json`` (every other column of the row) and ``KEY.txt`` (the ``caption`` column: the text the
model was conditioned on); a labelled output's samples also carry ``KEY.cls`` (the class id as
decimal text, WebDataset's convention) and ``label`` / ``label_name`` in ``KEY.json``.
Keys are ``<prompt_id>-<nnnnn>`` and prompt ids are ``[A-Za-z0-9_-]``,
so a key never holds the ``.`` at which WebDataset splits member names.

**Atomicity.** The key index ``<name>.keys.parquet`` is committed first, the tar second (each
atomically); the tar's appearance is the commit. A reader of ``data/**/*.tar`` therefore never
sees a tar whose keys a resume would plan again. A run killed between the two commits leaves an
index without its tar: its keys are not committed (:meth:`key_files` skips it) and the next run
removes it (:meth:`remove_uncommitted`). A tar without its index, or whose members disagree with
it, or that is truncated, is damaged: set aside with its index. A tar rewritten
(:meth:`~.base.OutputFormat.rewrite`, ``score``) goes through the same writer: a kill between the two
commits leaves the old tar beside its new index (same keys), so the tar is still the old shard whole.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ... import schema as S
from ...errors import first_line
from ...faults import inject_full_disk, stall
from ...storage import (
    Location,
    discard_spill,
    is_file,
    list_files,
    publish_file,
    spill_path,
    write_parquet_atomic,
)
from .base import DATA_GLOB, OutputFormat, ShardWriter, check_parquet

if TYPE_CHECKING:
    import pyarrow as pa

IMAGE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
"""``output.image_format`` → the WebDataset member extension (the decoders' names)."""


class WebDatasetFormat(OutputFormat):
    name = "webdataset"
    suffix = ".tar"
    index_suffix = ".keys.parquet"
    companion_suffixes = (index_suffix,)

    def shard_name(self, run_id: str, task: int, number: int) -> str:
        return f"{run_id}/{task // 1000:04d}/{task:05d}{number:04d}.tar"

    def index_of(self, tar: str) -> str:
        return tar[: -len(self.suffix)] + self.index_suffix

    def open_shard(
        self, name: str, settings: dict[str, Any] | None, row_group_size: int, schema: pa.Schema | None = None
    ) -> ShardWriter:
        path = self.data_path(name)
        return _TarShard(self.location, path, self.index_of(path), settings)

    def _listing(self) -> tuple[list[str], set[str]]:
        files = list_files(self.location, self.data_path())
        return [p for p in files if self.owns(p)], {p for p in files if p.endswith(self.index_suffix)}

    def key_files(self) -> list[str]:
        tars, indexes = self._listing()
        return [self.index_of(tar) for tar in tars if self.index_of(tar) in indexes]

    def remove_uncommitted(self) -> int:
        tars, indexes = self._listing()
        orphans = indexes - {self.index_of(tar) for tar in tars}
        for path in orphans:
            self.location.fs.delete_file(path)
        return len(orphans)

    def companions(self, path: str) -> list[str]:
        return [self.index_of(path)]

    def key_file(self, shard: str) -> str:
        return self.index_of(shard)

    def shard_of(self, key_file: str) -> str:
        return key_file[: -len(self.index_suffix)] + self.suffix

    def _index_keys(self, tar: str) -> list[str]:
        import pyarrow.parquet as pq

        with self.location.fs.open_input_file(self.index_of(tar)) as handle:
            return [str(k) for k in pq.read_table(handle, columns=[S.KEY]).column(0).to_pylist()]

    def check(self, path: str) -> str | None:
        index = self.index_of(path)
        if not is_file(self.location, index):
            return f"no key index ({posixpath.basename(index)})"
        reason = check_parquet(self.location, index, S.KEY)
        if reason:
            return f"unreadable key index: {reason}"
        try:
            keys = self._index_keys(path)
            with self.location.fs.open_input_file(path) as handle:
                size = handle.size()
                with tarfile.open(fileobj=handle, mode="r:") as tar:
                    members = tar.getmembers()
            for member in members:
                if member.offset_data + member.size > size:
                    return f"truncated ({member.name} ends past the file's {size} bytes)"
        except Exception as exc:
            return first_line(exc, with_type=True)
        found: dict[str, set[str]] = {}
        for member in members:
            key, _, extension = member.name.partition(".")
            found.setdefault(key, set()).add(extension)
        if sorted(found) != sorted(keys):
            return f"{len(found)} samples in the tar, {len(keys)} keys in its index"
        incomplete = [
            key
            for key, extensions in found.items()
            if not {"json", "txt"} <= extensions or len(extensions - {"cls"}) != 3
        ]
        if incomplete:
            return f"sample {incomplete[0]} lacks its image, .json or .txt"
        labelled = {"cls" in extensions for extensions in found.values()}
        if len(labelled) > 1:
            return "some samples have a .cls member and others do not"
        return None

    def read_rows(self, path: str) -> Iterator[dict[str, Any]]:
        """The tar's samples in order, one at a time (a sample's members are consecutive, as
        ``webdataset`` requires): memory holds one sample, whatever the shard's size."""

        def row_of(key: str, members: dict[str, bytes]) -> dict[str, Any]:
            row = json.loads(members.pop("json"))
            caption = members.pop("txt").decode()
            if caption != row.get(S.CAPTION):
                raise ValueError(f"{key}.txt differs from the caption in {key}.json")
            label = members.pop("cls", None)
            if label is not None and int(label.decode()) != row.get(S.LABEL):
                raise ValueError(f"{key}.cls differs from the label in {key}.json")
            ((extension, blob),) = members.items()
            row[S.IMAGE] = {"bytes": blob, "path": f"{key}.{extension}"}
            return row

        current: str | None = None
        members: dict[str, bytes] = {}
        with self.location.fs.open_input_file(path) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                if key != current:
                    if current is not None:
                        yield row_of(current, members)
                    current, members = key, {}
                data = tar.extractfile(member)
                members[extension] = data.read() if data is not None else b""
        if current is not None:
            yield row_of(current, members)

    def describe(self) -> dict[str, Any]:
        # ``datasets``' webdataset builder infers the columns (__key__, __url__, png|jpg|webp, json, txt).
        return {
            "format": self.name,
            "data_files": f"{DATA_GLOB}{self.suffix}",
            "features": [],
            "layout": "WebDataset tar shards (`data/<run>/<task//1000>/*.tar`): per image "
            "`KEY.<image format>`, `KEY.json` (every other column of the row) and `KEY.txt` (the caption), "
            "and with labels `KEY.cls` (the class id; `label` and `label_name` in `KEY.json`); "
            "`*.keys.parquet` beside each tar lists its keys.",
        }


class _TarShard(ShardWriter):
    """A tar streamed into a spill file (:func:`~pixart_batch.storage.spill_path`); :meth:`commit`
    commits the key index, then the tar (see the module's docstring)."""

    def __init__(self, loc: Location, path: str, index: str, settings: dict[str, Any] | None) -> None:
        self.loc, self.path, self.index, self.settings = loc, path, index, settings
        self.keys: list[str] = []
        self.names = S.label_names(settings)
        self.closed = False
        self.tmp = spill_path(loc, path)
        self.file = open(self.tmp, "wb")  # noqa: SIM115  # closed by commit/abort
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o444, 0
        self.tar.addfile(info, io.BytesIO(data))

    def write(self, table: pa.Table) -> None:
        try:
            for row in table.to_pylist():
                key = row.pop(S.KEY)
                image = row.pop(S.IMAGE)
                if "." in key or "/" in key:  # prompt ids are [A-Za-z0-9_-]: never happens
                    raise ValueError(f"key {key!r} cannot name a WebDataset sample")
                extension = IMAGE_EXTENSIONS[row[S.IMAGE_FORMAT]]
                self._add(f"{key}.{extension}", image["bytes"])
                if self.names is not None:
                    row[S.LABEL_NAME] = self.names[row[S.LABEL]]
                self._add(f"{key}.json", json.dumps({S.KEY: key, **row}, sort_keys=True).encode())
                self._add(f"{key}.txt", (row[S.CAPTION] or "").encode())
                if self.names is not None:
                    self._add(f"{key}.cls", str(row[S.LABEL]).encode())
                self.keys.append(key)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> int:
        import os

        import pyarrow as pa

        try:
            self.tar.close()
            self.file.close()
            inject_full_disk(posixpath.basename(self.path))
            size = os.path.getsize(self.tmp)
            write_parquet_atomic(
                self.loc, self.index, pa.table({S.KEY: self.keys}, schema=S.key_index_schema(self.settings))
            )
            publish_file(self.loc, self.tmp, self.path, before_commit=lambda: stall("shard-commit"))
            self.closed = True
            return int(size)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for part in (self.tar, self.file):
            try:
                part.close()
            except Exception:
                pass
        discard_spill(self.loc, self.tmp)
