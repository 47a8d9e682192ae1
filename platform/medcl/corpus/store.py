"""A built corpus: Parquet shards in CORPUS_SCHEMA plus a sha256-checked manifest, in a local
directory, a shared mount or an object store (``s3://bucket/corpus``; every read and write goes
through :mod:`medcl.storage`).

Layout of a corpus directory (written by ``medcl corpus build``)::

    part-00000.parquet ...   id, image (encoded bytes or null), caption, source, modality, license
    manifest.json            {"kind": "medcl-corpus", "rows": N, "columns": [...],
                              "sources": {name: rows}, "shards": [{"file", "rows", "sha256"}, ...]}
    build_report.json        per source: rows read / written / skipped by reason (see build.py)

:class:`CorpusStore` reads it back by id: ``store.fetch(["roco:ROCO_00002"])`` returns the rows as
dicts (image bytes included). The id -> (shard, row) map is built on first use from the ``id``
columns only; shard tables are read on demand and a few are kept in memory.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass

import pyarrow as pa

from medcl import publish, storage
from medcl.corpus.parquet_io import read_table, write_table
from medcl.corpus.schema import (CORPUS_COLUMNS, CORPUS_SCHEMA, check_listed_names, read_manifest_body,
                                 verify_listed_files)
from medcl.hashing import sha256_file

CORPUS_MANIFEST = "manifest.json"
CORPUS_KIND = "medcl-corpus"
BUILD_REPORT = "build_report.json"


@dataclass(frozen=True)
class CorpusShard:
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class CorpusManifest:
    shards: tuple[CorpusShard, ...]
    sources: dict

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


def corpus_shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_corpus_shard(directory, index: int, table: pa.Table, *, name: str | None = None) -> CorpusShard:
    """Write one shard (cast to CORPUS_SCHEMA) as ``name`` (default ``part-{index:05d}.parquet``)
    into ``directory`` (a local path or an object-store place, see :mod:`medcl.storage`) and return
    its manifest entry (rows, sha256 of the written file)."""
    path = storage.place(directory) / (name or corpus_shard_name(index))
    write_table(table.select(list(CORPUS_COLUMNS)).cast(CORPUS_SCHEMA), path)
    return CorpusShard(path.name, table.num_rows, sha256_file(path))


def write_corpus_manifest(directory, shards: list[CorpusShard], sources: dict):
    """Write ``manifest.json`` into ``directory`` (any place); return its place."""
    path = storage.place(directory) / CORPUS_MANIFEST
    body = {"kind": CORPUS_KIND, "rows": sum(s.rows for s in shards), "columns": list(CORPUS_COLUMNS),
            "sources": sources, "shards": [asdict(s) for s in shards]}
    storage.write_text(path, json.dumps(body, indent=2))
    return path


def read_corpus_manifest(directory, *, verify: bool = True) -> CorpusManifest:
    """The manifest of a corpus directory (its current version); with ``verify`` every shard's sha256 is checked.

    Raises FileNotFoundError when there is no manifest, CorruptArtifactError naming the file when
    a shard is missing or its sha256 differs.
    """
    directory = publish.resolve(directory)  # the current version (medcl.publish); itself when unversioned
    path, body = read_manifest_body(directory, CORPUS_MANIFEST, CORPUS_KIND, "medcl corpus build")
    shards = tuple(CorpusShard(**s) for s in body["shards"])
    check_listed_names(directory, [s.file for s in shards], path)  # every shard inside the folder, verified or not
    if verify:
        verify_listed_files(directory, {s.file: s.sha256 for s in shards}, path.name)
    return CorpusManifest(shards=shards, sources=dict(body.get("sources", {})))


class CorpusStore:
    """Random access by id to a built corpus.

    ``CorpusStore(dir)`` (a local path or an object-store URI) reads the corpus version ``dir``'s
    CURRENT names (:func:`medcl.publish.resolve`: ``directory``, fixed for the store's life) and verifies the manifest (sha256 of every shard) unless ``verify=False``.
    ``len(store)`` is the row count from the manifest; ``fetch(ids)`` returns one dict per id, in
    the order asked, with the CORPUS_SCHEMA columns (``image`` is bytes or None); an unknown id
    raises KeyError naming it. ``paths`` lists the shard files (local paths or URIs; for Ray Data,
    ``paths, keywords = parquet_io.ray_parquet_source(store.paths)`` then
    ``ray.data.read_parquet(paths, **keywords)``).
    """

    def __init__(self, directory, *, verify: bool = True, cached_shards: int = 4):
        self.location = storage.place(directory)  # the folder given
        self.directory = publish.resolve(self.location)  # the version read (medcl.publish), fixed from now on
        self.manifest = read_corpus_manifest(self.directory, verify=verify)
        self._locations: dict[str, tuple[int, int]] | None = None
        self._tables: OrderedDict[int, pa.Table] = OrderedDict()
        self._cached_shards = max(1, cached_shards)

    def __len__(self) -> int:
        return self.manifest.rows

    def __contains__(self, corpus_id: str) -> bool:
        return corpus_id in self._index()

    @property
    def paths(self) -> list[str]:
        return [str(self.directory / s.file) for s in self.manifest.shards]

    def ids(self) -> list[str]:
        """Every id, in shard then row order."""
        return list(self._index())

    def fetch(self, ids) -> list[dict]:
        """Rows for ``ids`` (any iterable of str), in order; duplicates in ``ids`` are allowed."""
        index = self._index()
        wanted = list(ids)
        missing = [i for i in wanted if i not in index]
        if missing:
            raise KeyError(f"{len(missing)} id(s) not in corpus {self.directory}: {missing[:5]}")
        by_shard: dict[int, list[int]] = {}
        for position, corpus_id in enumerate(wanted):
            by_shard.setdefault(index[corpus_id][0], []).append(position)
        out: list[dict | None] = [None] * len(wanted)
        for shard, positions in by_shard.items():
            rows = [index[wanted[p]][1] for p in positions]
            taken = self._table(shard).take(pa.array(rows, pa.int64())).to_pylist()
            for position, row in zip(positions, taken):
                out[position] = row
        return out  # type: ignore[return-value]

    def read_all(self, columns: list[str] | None = None) -> pa.Table:
        """The whole corpus as one table (small corpora, tests)."""
        return pa.concat_tables([read_table(p, columns=columns) for p in self.paths])

    def _index(self) -> dict[str, tuple[int, int]]:
        if self._locations is None:
            locations: dict[str, tuple[int, int]] = {}
            for shard, path in enumerate(self.paths):
                for row, corpus_id in enumerate(read_table(path, columns=["id"])["id"].to_pylist()):
                    locations.setdefault(corpus_id, (shard, row))
            self._locations = locations
        return self._locations

    def _table(self, shard: int) -> pa.Table:
        if shard in self._tables:
            self._tables.move_to_end(shard)
            return self._tables[shard]
        table = read_table(self.paths[shard])
        self._tables[shard] = table
        while len(self._tables) > self._cached_shards:
            self._tables.popitem(last=False)
        return table
