"""``medcl corpus build``: every source of a spec to one corpus directory (store.py layout).

Two paths, the same result (rows, reasons, kept duplicates; build_ray.py documents the Ray one):

* ``use_ray=True``: build_ray.py, the whole pipeline on Ray Data (reads in tasks, hash-shuffle
  de-duplication, shards written and hashed by the workers); the driver holds listings and
  per-shard statistics only.
* ``use_ray=False`` (``--local``, small builds and tests): the sources are read here in source
  order (``iter_source``), normalised in chunks of ``CHUNK_ROWS`` (normalise.py, the same function),
  duplicate ids dropped (the first occurrence is kept) and shards of ``spec.shard_rows`` rows
  written serially; ``strict`` raises :class:`CorpusError` at the first bad row without reading on.

Either way ``strict`` names the first bad row in source order (source, id, where it was read from,
reason), and every skip is counted by reason with a few example ids (the first in source order).

``build_report.json``: ``{"rows": N, "shards": S, "sources": {name: {"type", "read", "written",
"skipped": {reason: n}, "examples": {reason: [id, ...]}}}}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterator

import pyarrow as pa

from medcl.confine import rmtree_below
from medcl import publish, storage
from medcl.corpus.normalise import normalise_table
from medcl.corpus.schema import CORPUS_COLUMNS, CorruptArtifactError
from medcl.corpus.sources import RAW_SCHEMA, iter_source
from medcl.corpus.spec import CorpusError, CorpusSpec
from medcl.corpus.store import (BUILD_REPORT, CORPUS_MANIFEST, CorpusShard, read_corpus_manifest, write_corpus_manifest,
                               write_corpus_shard)
from medcl.corpus.verify import verify_listing

CHUNK_ROWS = 512
EXAMPLES = 5


@dataclass
class SourceReport:
    type: str
    read: int = 0
    written: int = 0
    skipped: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)

    def skip(self, reason: str, corpus_id: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES:
            shown.append(corpus_id)


class _ShardWriter:
    """Buffers good rows and writes a shard every ``shard_rows`` rows."""

    def __init__(self, out: storage.Place, shard_rows: int):
        self.out, self.shard_rows = out, shard_rows
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.shards: list[CorpusShard] = []

    def add(self, table: pa.Table) -> None:
        self.pending.append(table.select(list(CORPUS_COLUMNS)))
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def close(self) -> list[CorpusShard]:
        if self.pending_rows:
            self._flush(self.pending_rows)
        return self.shards

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending).combine_chunks()
        self.shards.append(write_corpus_shard(self.out, len(self.shards), table.slice(0, rows)))
        rest = table.slice(rows)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows


def build_corpus(spec: CorpusSpec, out, *, strict: bool = False, use_ray: bool = True,
                 log: Callable[[str], None] = lambda message: None) -> dict:
    """Build the corpus of ``spec`` as a new version of ``out`` (a local path, a shared mount or an
    object-store URI, see :mod:`medcl.storage`); return the report. The build runs in a staging
    folder and is published only once its manifest's sha256s check (:mod:`medcl.publish`): until
    then, and whenever it fails, the previous corpus stays readable; a second writer is refused."""
    with publish.publishing(out, verify=lambda stage: _verify(stage, use_ray), command="medcl corpus build",
                            legacy=LEGACY) as stage:
        if use_ray:
            from medcl.corpus.build_ray import build_on_ray

            try:
                shards, sources = build_on_ray(spec, stage, strict=strict, log=log)
            finally:
                rmtree_below(stage / ".tmp", stage)
        else:
            shards, sources = _build_locally(spec, stage, strict)
        for name, r in sources.items():
            log(f"{name}: read {r['read']}, wrote {r['written']}, skipped {r['skipped'] or 0}")
        write_corpus_manifest(stage, shards, {name: r["written"] for name, r in sources.items()})
        body = {"rows": sum(s.rows for s in shards), "shards": len(shards), "sources": sources}
        storage.write_text(stage / BUILD_REPORT, json.dumps(body, indent=2))
    return body


LEGACY = ("part-*.parquet", CORPUS_MANIFEST, BUILD_REPORT, ".tmp")  # an unversioned corpus's files


def _verify(stage: storage.Place, use_ray: bool) -> None:
    """The staged corpus before it is published: every listed shard's sha256, and no other shard."""
    manifest = read_corpus_manifest(stage, verify=False)
    listed = {s.file: s.sha256 for s in manifest.shards}
    extra = sorted(set(n for n in storage.listdir(stage) if n.endswith(".parquet")) - set(listed))
    if extra:
        raise CorruptArtifactError(f"{stage}: {extra[0]} is not listed in {CORPUS_MANIFEST}; not published")
    verify_listing(stage, listed, CORPUS_MANIFEST, use_ray=use_ray)


def _build_locally(spec: CorpusSpec, out: storage.Place, strict: bool) -> tuple[list[CorpusShard], dict]:
    writer = _ShardWriter(out, spec.shard_rows)
    seen: set[str] = set()
    reports: dict[str, SourceReport] = {}
    for source in spec.sources:
        report = reports.setdefault(source.name, SourceReport(source.type))
        for chunk in raw_chunks(source, spec):
            keep = _screen(normalise_table(chunk, spec.max_side), source.name, report, seen, strict)
            writer.add(keep)
            report.written += keep.num_rows
    return writer.close(), {name: vars(r) for name, r in reports.items()}


def _screen(table: pa.Table, name: str, report: SourceReport, seen: set, strict: bool) -> pa.Table:
    """The batch's good rows whose id was not seen before; count the rest (strict: raise on the first)."""
    report.read += table.num_rows
    keep = []
    for i, (corpus_id, reason, ref) in enumerate(zip(*(table[c].to_pylist() for c in ("id", "reason", "ref")))):
        if not reason and corpus_id in seen:
            reason = "duplicate_id"
        if reason:
            if strict:
                raise CorpusError(f"--strict: source {name!r}, id {corpus_id!r} ({ref}): {reason}")
            report.skip(reason, corpus_id)
            continue
        seen.add(corpus_id)
        keep.append(i)
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))


def raw_chunks(source, spec: CorpusSpec) -> Iterator[pa.Table]:
    """The source's raw records as RAW_SCHEMA tables of at most CHUNK_ROWS rows."""
    records = iter_source(source, spec)
    while chunk := list(islice(records, CHUNK_ROWS)):
        yield pa.Table.from_pylist(chunk, schema=RAW_SCHEMA)
