"""``medcl index build``: one global index per space, trained once, filled shard by shard in parallel.

Per space (``text``: every row; ``image``: rows with an image):

1. The factory is chosen for the space's total row count (index_factory.resolve_factory; ``auto``
   sizes it from the rows, docs/corpus.md has the table), and a seeded sample of
   ``min(rows, train_sample)`` vectors (read from the shards, only the sampled rows kept, inside the
   training task: the sample never passes through the driver) trains it once: one coarse quantizer
   (and PQ/OPQ codebooks) for the whole corpus.
2. The trained, empty index is serialised into the object store, and each embedding shard is
   added to a copy of it in its own Ray task with a declared ``memory=`` (``fill_memory``); the task
   checks the shard's sha256, writes ``{space}-{n:05d}.faiss`` and its part of the id mapping
   ``{space}-ids/part-{n:05d}.parquet`` (``label, id, caption, modality, shard, row``).
3. Labels are global: FAISS label ``i`` of index shard n is ``offset(n) + i``, the row of the
   space's id mapping (one Parquet dataset, ``{space}-ids/``). Because every index shard shares one
   quantizer and codebooks, searching the shards and merging their top-k equals searching one
   index holding everything (tests/unit/corpus/test_index.py).

Without Ray (``ray.is_initialized()`` false, or ``use_ray=False``) the same functions run here.
"""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medcl.corpus import shards as emb
from medcl.corpus.index_factory import IndexBuildError, default_train_sample, new_index, resolve_factory
from medcl.hashing import sha256_file

COLUMN = {"text": "text_embedding", "image": "image_embedding"}
MIB = 1 << 20
DEFAULT_TRAIN_SAMPLE = 100_000


def space_rows(shard: emb.ShardInfo, space: str) -> int:
    return shard.rows if space == "text" else shard.with_image


def fill_memory(rows: int, dim: int, template_bytes: int) -> int:
    """Bytes a fill task declares: the shard's vectors (twice: Arrow and NumPy), the index's codes
    (at most the vectors again), the template, and 256 MiB for Python and FAISS."""
    return int(3 * rows * dim * 4 + 2 * template_bytes + 256 * MIB)


def train_memory(sample: int, dim: int) -> int:
    return int(3 * sample * dim * 4 + 512 * MIB)


def _rows_in_space(table: pa.Table, space: str) -> np.ndarray:
    if space == "text":
        return np.arange(table.num_rows)
    return np.flatnonzero(table["has_image"].to_numpy(zero_copy_only=False))


def sample_vectors(emb_dir: Path, manifest: emb.EmbeddingManifest, space: str, size: int, seed: int) -> np.ndarray:
    """A seeded sample of ``size`` vectors of ``space`` across all shards (one shard read at a time)."""
    counts = [space_rows(s, space) for s in manifest.shards]
    picked = np.sort(np.random.default_rng(seed).choice(sum(counts), size=size, replace=False))
    bounds, parts = np.cumsum([0] + counts), []
    for number, shard in enumerate(manifest.shards):
        local = picked[(picked >= bounds[number]) & (picked < bounds[number + 1])] - bounds[number]
        if len(local):
            table = emb.read_shard(emb_dir, shard, ["has_image", COLUMN[space]])
            rows = _rows_in_space(table, space)[local]
            parts.append(emb.vectors(table.take(pa.array(rows)), COLUMN[space]))
    return np.ascontiguousarray(np.concatenate(parts))


def train(factory: str, dim: int, vectors: np.ndarray) -> np.ndarray:
    """The trained, empty index, serialised (uint8 array)."""
    index = new_index(factory, dim)
    if not index.is_trained:
        index.train(vectors)
    return faiss.serialize_index(index)


def sample_and_train(emb_dir: str, manifest: emb.EmbeddingManifest, space: str, size: int, seed: int,
                     factory: str) -> np.ndarray:
    """:func:`sample_vectors` then :func:`train`, in one process (a Ray task on Ray, so the training
    sample is read where it is used and never reaches the caller); returns the serialised index."""
    return train(factory, manifest.dim, sample_vectors(Path(emb_dir), manifest, space, size, seed))


def fill_shard(emb_dir: str, shard: dict, number: int, space: str, offset: int, template: np.ndarray,
               out_dir: str) -> dict:
    """Add one embedding shard to a copy of ``template``; write its index and id-mapping part.

    Raises CorruptArtifactError when the shard's sha256 differs from the embedding manifest.
    Returns ``{"index", "meta", "rows", "sha256": {file: sha256}}``.
    """
    from medcl.corpus.schema import verify_listed_files

    verify_listed_files(Path(emb_dir), {shard["file"]: shard["sha256"]}, emb.MANIFEST)
    table = emb.read_shard(Path(emb_dir), shard["file"])
    rows = _rows_in_space(table, space)
    index = faiss.deserialize_index(template)
    index.add(np.ascontiguousarray(emb.vectors(table.take(pa.array(rows)), COLUMN[space])))
    stem, out = f"{space}-{number:05d}", Path(out_dir)
    faiss.write_index(index, str(out / f"{stem}.faiss"))
    meta = table.select(["id", "caption", "modality"]).take(pa.array(rows))
    meta = meta.add_column(0, "label", pa.array(offset + np.arange(len(rows)), pa.int64()))
    meta = meta.append_column("shard", pa.array(np.full(len(rows), number), pa.int32()))
    meta = meta.append_column("row", pa.array(rows, pa.int64()))
    mapping = f"{space}-ids/part-{number:05d}.parquet"
    (out / mapping).parent.mkdir(exist_ok=True)
    pq.write_table(meta, out / mapping)
    files = (f"{stem}.faiss", mapping)
    return {"index": files[0], "meta": files[1], "rows": len(rows), "sha256": {f: sha256_file(out / f) for f in files}}


def build_space(emb_dir: Path, manifest: emb.EmbeddingManifest, space: str, out_dir: Path, *, factory: str,
                train_sample: int, nprobe, ef_search, seed: int, use_ray: bool, log) -> tuple[list[dict], dict]:
    """Train once and fill every shard of ``space``; returns (index.json entries, file -> sha256)."""
    counts = [space_rows(s, space) for s in manifest.shards]
    offsets, total = np.cumsum([0] + counts)[:-1].tolist(), sum(counts)
    blank = [{"space": space, "shard": n, "source": s.file, "rows": 0, "offset": o, "factory": None, "params": {},
              "index": None, "meta": None} for n, (s, o) in enumerate(zip(manifest.shards, offsets))]
    if total == 0:
        log(f"[{space}]: no rows with an embedding in this space; nothing to index")
        return blank, {}
    if train_sample is None:  # enough for the factory's lists (39 per list), at least DEFAULT_TRAIN_SAMPLE
        planned = resolve_factory(factory, rows=total, dim=manifest.dim, sample=total).factory
        sample = default_train_sample(planned, total, DEFAULT_TRAIN_SAMPLE)
    else:
        sample = min(total, train_sample)
    choice = resolve_factory(factory, rows=total, dim=manifest.dim, sample=sample, nprobe=nprobe, ef_search=ef_search)
    for note in choice.notes:
        log(f"[{space}]: {note}")
    template = _run(use_ray, sample_and_train, train_memory(sample, manifest.dim), str(emb_dir), manifest, space,
                    sample, seed, choice.factory)
    jobs = [(n, s, o, c) for n, (s, o, c) in enumerate(zip(manifest.shards, offsets, counts)) if c]
    results = _fill_all(use_ray, emb_dir, jobs, space, template, out_dir, manifest.dim)
    files = {}
    for (number, _, _, _), result in zip(jobs, results):
        blank[number].update(rows=result["rows"], factory=choice.factory, params=choice.params,
                             index=result["index"], meta=result["meta"])
        files.update(result["sha256"])
    log(f"[{space}]: {total} vectors in {len(jobs)} shard(s), {choice.factory} {choice.params or ''}".rstrip())
    return blank, files


def _run(use_ray: bool, fn, memory: int, *args):
    if not use_ray:
        return fn(*args)
    import ray

    return ray.get(ray.remote(fn).options(num_cpus=1, memory=memory).remote(*args))


def _fill_all(use_ray: bool, emb_dir: Path, jobs: list, space: str, template: np.ndarray, out_dir: Path,
              dim: int) -> list[dict]:
    args = [(str(emb_dir), {"file": s.file, "sha256": s.sha256}, n, space, o) for n, s, o, _ in jobs]
    if not use_ray:
        return [fill_shard(*a, template, str(out_dir)) for a in args]
    import ray

    ref, remote = ray.put(template), ray.remote(fill_shard)
    return ray.get([remote.options(num_cpus=1, memory=fill_memory(c, dim, template.nbytes))
                    .remote(*a, ref, str(out_dir)) for a, (_, _, _, c) in zip(args, jobs)])


def check_train_sample(train_sample: int | None) -> None:
    if train_sample is not None and train_sample < 1:
        raise IndexBuildError(f"--train-sample must be >= 1, got {train_sample}")
