"""``medcl corpus build`` on Ray Data: nothing but listings and per-batch statistics on the driver.

    driver: source_units() per source (file names and sizes)
    -> from_items(units) -> map_batches(_read_units)       each unit read in a task (files, tars, JSONL)
       [-> limit(n) per source] -> union
    -> map_batches(_normalised)                            validate + decode images (normalise.py)
    -> groupby("id", num_partitions=P).map_groups(_keep_first)   hash shuffle: duplicates meet
    -> map_batches(_write_part, batch_size=shard_rows)     each batch's good rows -> one Parquet file,
                                                           written and sha256-hashed by the worker
    driver: one small JSON row per written batch -> build_report.json, manifest.json

Every raw record carries an ``ordinal`` (source, unit, row packed in an int64), its position in
source order. ``_keep_first`` keeps the good row with the smallest ordinal for each id (the others
become ``duplicate_id``; bad rows never claim an id), so the result equals the in-process build's.
Rows of a shard are in source order; shards are named ``part-00000.parquet``... in order of their
first row. ``strict`` runs the whole pass, then raises CorpusError naming the bad row with the
smallest ordinal (the first in source order) and leaves no shard behind.

P (hash partitions) is ``spec.partitions``, else one per PARTITION_BYTES of listed input (at least
1, at most MAX_PARTITIONS). A shard holds at most ``spec.shard_rows`` rows (a batch of that many
rows, less its bad ones). The output directory must be reachable from every node: an object-store
URI (``s3://bucket/corpus``, written through :mod:`medcl.storage` by the workers) or a shared mount
(``medcl corpus build`` refuses a node-local ``--out`` on a multi-node cluster before reading).
"""
from __future__ import annotations

import json
import math
import uuid
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from medcl import storage
from medcl.corpus.normalise import normalise_table
from medcl.corpus.schema import CORPUS_COLUMNS
from medcl.corpus.sources import RAW_SCHEMA, read_unit, source_units
from medcl.corpus.spec import CorpusError, CorpusSpec
from medcl.corpus.store import CorpusShard, corpus_shard_name, write_corpus_shard

CHUNK_ROWS = 512  # raw records per block out of a read task
PARTITION_BYTES = 256 << 20
MAX_PARTITIONS = 1024
UNIT_BITS, ROW_BITS = 24, 32  # ordinal = source << 56 | unit << 32 | row
MAX_SOURCES = 127
EXAMPLES = 5


def ordinal(source: int, unit: int, row: int) -> int:
    return (source << (UNIT_BITS + ROW_BITS)) | (unit << ROW_BITS) | row


def plan_units(spec: CorpusSpec) -> list[list[dict]]:
    """Per source, its units (FileNotFoundError naming a missing source); checks the ordinal limits."""
    if len(spec.sources) > MAX_SOURCES:
        raise CorpusError(f"sources: {len(spec.sources)} sources; at most {MAX_SOURCES} per build")
    plan = [source_units(source, spec) for source in spec.sources]
    for source, units in zip(spec.sources, plan):
        if len(units) >= 1 << UNIT_BITS:
            raise CorpusError(f"source {source.name!r}: {len(units)} files; at most {(1 << UNIT_BITS) - 1}")
    return plan


def partitions_for(spec: CorpusSpec, plan: list[list[dict]]) -> int:
    """Hash partitions of the de-duplicating shuffle (see the module docstring)."""
    if spec.partitions:
        return spec.partitions
    listed = sum(u["bytes"] for units in plan for u in units)
    return max(1, min(MAX_PARTITIONS, math.ceil(listed / PARTITION_BYTES)))


def _read_units(batch: pa.Table, spec: CorpusSpec):
    """Ray Data generator UDF: the raw records of each unit in ``batch``, CHUNK_ROWS at a time."""
    for source_index, unit_index, unit in zip(*(batch[c].to_pylist() for c in ("source", "unit_index", "unit"))):
        source = spec.sources[source_index]
        base, chunk = ordinal(source_index, unit_index, 0), []
        for row, record in enumerate(read_unit(source, spec, json.loads(unit))):
            if row >= 1 << ROW_BITS:
                raise CorpusError(f"source {source.name!r}: {unit} has over {1 << ROW_BITS} records; split it")
            chunk.append({**record, "ordinal": base + row})
            if len(chunk) == CHUNK_ROWS:
                yield _raw_table(chunk)
                chunk = []
        if chunk:
            yield _raw_table(chunk)


def _raw_table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=RAW_SCHEMA.append(pa.field("ordinal", pa.int64())))


def _normalised(raw: pa.Table, max_side: int | None) -> pa.Table:
    return normalise_table(raw, max_side).append_column("ordinal", raw["ordinal"])


def _keep_first(group: pa.Table) -> pa.Table:
    """One id's rows: the good row with the smallest ordinal stays good, later good rows become
    ``duplicate_id`` (image dropped); rows already bad keep their reason."""
    if group.num_rows == 1:
        return group
    reasons, ordinals = group["reason"].to_pylist(), group["ordinal"].to_pylist()
    good = [i for i, reason in enumerate(reasons) if not reason]
    if len(good) <= 1:
        return group
    first = min(good, key=ordinals.__getitem__)
    marked = [r if r or i == first else "duplicate_id" for i, r in enumerate(reasons)]
    keep = pa.array([i == first or bool(r) for i, r in enumerate(reasons)])
    images = pc.if_else(keep, group["image"], pa.scalar(None, pa.binary()))
    group = group.set_column(group.schema.get_field_index("image"), "image", images)
    return group.set_column(group.schema.get_field_index("reason"), "reason", pa.array(marked, pa.string()))


def _write_part(batch: pa.Table, staging: str) -> pa.Table:
    """Write ``batch``'s good rows (in source order) to one staging file; return its statistics as
    one JSON row: file, rows, sha256, first ordinal, and per source read / skipped / examples / first bad."""
    ordinals = batch["ordinal"]
    good = batch.filter(pc.equal(batch["reason"], ""))
    stats: dict = {"file": None, "rows": good.num_rows, "sources": {}}
    if good.num_rows:
        good = good.take(pc.sort_indices(good["ordinal"]))
        first = int(good["ordinal"][0].as_py())
        shard = write_corpus_shard(staging, 0, good.select(list(CORPUS_COLUMNS)),
                                   name=f"part-{first:016x}-{uuid.uuid4().hex[:8]}.parquet")
        stats.update(file=shard.file, sha256=shard.sha256, first=first)
    for source, reason, corpus_id, ref, number in zip(
            *(batch[c].to_pylist() for c in ("source", "reason", "id", "ref")), ordinals.to_pylist()):
        entry = stats["sources"].setdefault(source, {"read": 0, "written": 0, "skipped": {}, "examples": {},
                                                     "first_bad": None})
        entry["read"] += 1
        if not reason:
            entry["written"] += 1
            continue
        entry["skipped"][reason] = entry["skipped"].get(reason, 0) + 1
        entry["examples"].setdefault(reason, []).append([number, corpus_id])
        if entry["first_bad"] is None or number < entry["first_bad"][0]:
            entry["first_bad"] = [number, corpus_id, ref, reason]
    for entry in stats["sources"].values():
        entry["examples"] = {r: sorted(e)[:EXAMPLES] for r, e in entry["examples"].items()}
    return pa.table({"stats": [json.dumps(stats)]})


def _dataset(spec: CorpusSpec, plan: list[list[dict]]):
    import ray.data

    parts = []
    for index, (source, units) in enumerate(zip(spec.sources, plan)):
        items = [{"source": index, "unit_index": i, "unit": json.dumps(u)} for i, u in enumerate(units)]
        part = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _read_units, fn_kwargs={"spec": spec}, batch_size=1, batch_format="pyarrow", num_cpus=0.25)
        parts.append(part.limit(source.limit) if source.limit else part)
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return union.map_batches(_normalised, fn_kwargs={"max_side": spec.max_side}, batch_format="pyarrow",
                             batch_size=None, num_cpus=0.5)


def build_on_ray(spec: CorpusSpec, out: storage.Place, *, strict: bool, log: Callable[[str], None]) -> tuple[list, dict]:
    """Run the pipeline into ``out`` (already cleared); return ``(shards, per-source report dicts)``."""
    from medcl.corpus.raydata import data_context

    data_context()
    plan = plan_units(spec)
    partitions = partitions_for(spec, plan)
    log(f"{sum(map(len, plan))} unit(s) in {len(plan)} source(s); {partitions} hash partition(s)")
    staging = out / ".tmp"
    storage.makedirs(staging)
    written = (_dataset(spec, plan).groupby("id", num_partitions=partitions)
               .map_groups(_keep_first, batch_format="pyarrow")
               .map_batches(_write_part, fn_kwargs={"staging": str(staging)}, batch_size=spec.shard_rows,
                            batch_format="pyarrow", num_cpus=0.5))
    parts = [json.loads(s) for b in written.iter_batches(batch_format="pyarrow", batch_size=None)
             for s in b["stats"].to_pylist()]
    reports = merge_stats(spec, parts)
    firsts = [r.pop("first_bad") for r in reports.values()]
    if strict and any(firsts):
        number, corpus_id, ref, reason = min(f for f in firsts if f)
        name = spec.sources[number >> (UNIT_BITS + ROW_BITS)].name
        raise CorpusError(f"--strict: source {name!r}, id {corpus_id!r} ({ref}): {reason}")
    return _publish(out, staging, parts), reports


def merge_stats(spec: CorpusSpec, parts: list[dict]) -> dict[str, dict]:
    """Per source name, in spec order: type, read, written, skipped by reason, first examples, first bad."""
    reports = {s.name: {"type": s.type, "read": 0, "written": 0, "skipped": {}, "examples": {}, "first_bad": None}
               for s in spec.sources}
    for part in parts:
        for name, entry in part["sources"].items():
            report = reports[name]
            report["read"] += entry["read"]
            report["written"] += entry["written"]
            for reason, count in entry["skipped"].items():
                report["skipped"][reason] = report["skipped"].get(reason, 0) + count
            for reason, examples in entry["examples"].items():
                report["examples"][reason] = sorted(report["examples"].get(reason, []) + examples)[:EXAMPLES]
            if entry["first_bad"] and (report["first_bad"] is None or entry["first_bad"] < report["first_bad"]):
                report["first_bad"] = entry["first_bad"]
    for report in reports.values():
        report["examples"] = {r: [i for _, i in e] for r, e in sorted(report["examples"].items())}
    return reports


def _publish(out: storage.Place, staging: storage.Place, parts: list[dict]) -> list[CorpusShard]:
    """Move the staging files to ``part-00000.parquet``... in order of their first row."""
    files = sorted((p for p in parts if p["file"]), key=lambda p: p["first"])
    shards = []
    for number, part in enumerate(files):
        name = corpus_shard_name(number)
        storage.move(staging / part["file"], out / name)
        shards.append(CorpusShard(name, part["rows"], part["sha256"]))
    return shards
