"""``medcl corpus build``: every source of a spec to one corpus directory (store.py layout).

For each source in spec order: the reader lists raw records on the driver (sources/) as Arrow
chunks of ``CHUNK_ROWS`` rows, ``WINDOW_CHUNKS`` chunks at a time; the normalise/validate step
(normalise.py: read image files, decode with PIL, decode captions) runs on Ray Data
(``from_arrow`` + ``map_batches``, order preserved) or in process (``use_ray=False``, small builds
and tests, same function). The driver then drops
duplicate ids (the first occurrence is kept), counts every skip by reason with a few example ids,
and writes shards of ``spec.shard_rows`` rows. ``strict`` raises :class:`CorpusError` at the first
bad row in source order, naming the source, the id, where it was read from and the reason.

``build_report.json``: ``{"rows": N, "shards": S, "sources": {name: {"type", "read", "written",
"skipped": {reason: n}, "examples": {reason: [id, ...]}}}}``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa

from medcl.corpus.normalise import normalise_table
from medcl.corpus.schema import CORPUS_COLUMNS
from medcl.corpus.sources import RAW_SCHEMA, iter_source
from medcl.corpus.spec import CorpusError, CorpusSpec
from medcl.corpus.store import BUILD_REPORT, CORPUS_MANIFEST, CorpusShard, write_corpus_manifest, write_corpus_shard

CHUNK_ROWS = 512
WINDOW_CHUNKS = 64  # chunks handed to one Ray Data execution (32k rows)
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

    def __init__(self, out: Path, shard_rows: int):
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


def build_corpus(spec: CorpusSpec, out: str | Path, *, strict: bool = False, use_ray: bool = True,
                 log: Callable[[str], None] = lambda message: None) -> dict:
    """Build the corpus of ``spec`` into ``out`` (its previous shards are replaced); return the report."""
    out = Path(out)
    _clear(out)
    writer = _ShardWriter(out, spec.shard_rows)
    seen: set[str] = set()
    reports: dict[str, SourceReport] = {}
    for source in spec.sources:
        report = reports.setdefault(source.name, SourceReport(source.type))
        for table in _normalised(source, spec, use_ray):
            keep = _screen(table, source.name, report, seen, strict)
            writer.add(keep)
            report.written += keep.num_rows
        log(f"{source.name}: read {report.read}, wrote {report.written}, skipped {report.skipped or 0}")
    shards = writer.close()
    sources = {name: r.written for name, r in reports.items()}
    write_corpus_manifest(out, shards, sources)
    body = {"rows": sum(s.rows for s in shards), "shards": len(shards),
            "sources": {name: vars(r) for name, r in reports.items()}}
    (out / BUILD_REPORT).write_text(json.dumps(body, indent=2))
    return body


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


def _normalised(source, spec: CorpusSpec, use_ray: bool) -> Iterator[pa.Table]:
    chunks = raw_chunks(source, spec)
    if not use_ray:
        for chunk in chunks:
            yield normalise_table(chunk, spec.max_side)
        return
    while window := list(islice(chunks, WINDOW_CHUNKS)):  # bounds what the driver holds at once
        yield from _normalised_on_ray(window, spec.max_side)


def _normalised_on_ray(chunks: list[pa.Table], max_side: int | None) -> Iterator[pa.Table]:
    import ray.data

    from medcl.corpus.raydata import data_context

    data_context()
    dataset = ray.data.from_arrow(chunks).map_batches(
        normalise_table, fn_kwargs={"max_side": max_side}, batch_format="pyarrow", batch_size=None, num_cpus=0.5)
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        if batch.num_rows:
            yield batch


def _clear(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CorpusError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("part-*.parquet")) + [out / CORPUS_MANIFEST, out / BUILD_REPORT]:
        if old.is_file():
            old.unlink()
    shutil.rmtree(out / ".tmp", ignore_errors=True)
