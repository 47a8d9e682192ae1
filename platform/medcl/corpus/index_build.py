"""``medcl index build``: one global index per space, trained once, filled shard by shard in parallel.

Per space (``text``: every row; ``image``: rows with an image):

1. The factory is chosen for the space's total row count (index_factory.resolve_factory; ``auto``
   sizes it from the rows, docs/corpus.md has the table), and a seeded sample of
   ``min(rows, train_sample)`` vectors (read from the shards, only the sampled rows kept, inside the
   training task: the sample never passes through the driver) trains it once: one coarse quantizer
   (and OPQ rotation, PQ and refine codebooks) for the whole corpus.
2. The training task writes the trained, empty index once, ``{space}-trained.faiss``, and hands it
   (serialised) to the fill tasks through the object store: the driver never holds it. Each
   embedding shard is encoded in its own Ray task with a declared ``memory=`` (``fill_memory``):
   the task checks the shard's sha256 and writes the shard's FAISS standalone codes
   ``{space}-{n:05d}.codes.npy`` ((rows, code size) uint8: IVF list number + PQ/Flat code,
   index_codes.py), its global labels ``{space}-{n:05d}.labels.npy`` (int64) and its part of the id
   mapping ``{space}-ids/part-{n:05d}.parquet`` (``label, id, caption, modality, shard, row``). On
   disk a vector costs its code size + 8 bytes; the quantizer is stored once per space.
   ``Flat`` (exact) takes the same path: its standalone code is the vector's 4d bytes, appended
   back unchanged, so an exact index costs 4d + 8 bytes per vector and an empty trained file.
   Factories without standalone codes (HNSW graphs, which share nothing trained) write each shard
   as a whole FAISS file ``{space}-{n:05d}.faiss`` instead.
3. Labels are global: row i of index shard n has label ``offset(n) + i``, the row of the space's id
   mapping (one Parquet dataset, ``{space}-ids/``). A process serving several shards appends their
   codes to one copy of the trained index (index_load.py), so searching it equals searching one
   index built from every vector (tests/unit/corpus/test_index.py).

Without Ray (``ray.is_initialized()`` false, or ``use_ray=False``) the same functions run here.
"""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medcl import storage
from medcl.corpus import shards as emb
from medcl.corpus.index_codes import encode, has_codes
from medcl.corpus.index_factory import IndexBuildError, default_train_sample, new_index, resolve_factory
from medcl.hashing import sha256_file
from medcl.storage_dirs import scratch_dir

COLUMN = {"text": "text_embedding", "image": "image_embedding"}
MIB = 1 << 20
DEFAULT_TRAIN_SAMPLE = 100_000


def space_rows(shard: emb.ShardInfo, space: str) -> int:
    return shard.rows if space == "text" else shard.with_image


def fill_memory(rows: int, dim: int, template_bytes: int) -> int:
    """Bytes a fill task declares: the shard's vectors (twice: Arrow and NumPy), their codes or
    whole index (at most the vectors again), the template twice (object store copy and the
    deserialised index), and 256 MiB for Python and FAISS."""
    return int(3 * rows * dim * 4 + 2 * template_bytes + 256 * MIB)


def train_memory(sample: int, dim: int) -> int:
    return int(3 * sample * dim * 4 + 512 * MIB)


def _rows_in_space(table: pa.Table, space: str) -> np.ndarray:
    if space == "text":
        return np.arange(table.num_rows)
    return np.flatnonzero(table["has_image"].to_numpy(zero_copy_only=False))


def sample_vectors(emb_dir, manifest: emb.EmbeddingManifest, space: str, size: int, seed: int) -> np.ndarray:
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


def train(factory: str, dim: int, vectors: np.ndarray) -> faiss.Index:
    """The trained, empty index."""
    index = new_index(factory, dim)
    if not index.is_trained:
        index.train(vectors)
    return index


def sample_and_train(emb_dir: str, manifest: emb.EmbeddingManifest, space: str, size: int, seed: int,
                     factory: str, out_dir: str) -> tuple[dict, np.ndarray]:
    """:func:`sample_vectors`, :func:`train`, and ``{space}-trained.faiss`` written, in one process
    (a Ray task on Ray, so neither the sample nor the index reaches the caller). ``emb_dir`` and
    ``out_dir`` are places of :mod:`medcl.storage` (a local path or a URI such as ``s3://...``).

    Returns ``({"file", "sha256", "codes": bool}, serialised trained index)``.
    """
    index = train(factory, manifest.dim, sample_vectors(storage.place(emb_dir), manifest, space, size, seed))
    name = f"{space}-trained.faiss"
    with scratch_dir(out_dir) as out:
        faiss.write_index(index, str(out / name))
        info = {"file": name, "sha256": sha256_file(out / name), "codes": has_codes(index)}
    return info, faiss.serialize_index(index)


def fill_shard(emb_dir: str, shard: dict, number: int, space: str, offset: int, template: np.ndarray,
               out_dir: str) -> dict:
    """Encode one embedding shard with ``template``; write its codes (or whole index) and id-mapping part
    into ``out_dir`` (a local path, or a URI: written in a local scratch folder, then uploaded).

    Raises CorruptArtifactError when the shard's sha256 differs from the embedding manifest.
    Returns ``{"codes", "labels", "index", "meta", "rows", "sha256": {file: sha256}}`` (``codes``
    and ``labels`` are None for a whole-file shard, ``index`` None for a codes shard).
    """
    from medcl.corpus.schema import verify_listed_files

    source = storage.place(emb_dir)
    verify_listed_files(source, {shard["file"]: shard["sha256"]}, emb.MANIFEST)
    table = emb.read_shard(source, shard["file"])
    rows = _rows_in_space(table, space)
    vectors = np.ascontiguousarray(emb.vectors(table.take(pa.array(rows)), COLUMN[space]))
    with scratch_dir(out_dir) as out:
        return _write_shard(table, rows, vectors, faiss.deserialize_index(template), space, number, offset, out)


def _write_shard(table: pa.Table, rows: np.ndarray, vectors: np.ndarray, index: faiss.Index, space: str,
                 number: int, offset: int, out: Path) -> dict:
    """:func:`fill_shard`'s files, written in the local folder ``out``."""
    stem = f"{space}-{number:05d}"
    labels = offset + np.arange(len(rows), dtype=np.int64)
    if has_codes(index):
        result = {"codes": f"{stem}.codes.npy", "labels": f"{stem}.labels.npy", "index": None}
        np.save(out / result["codes"], encode(index, vectors), allow_pickle=False)
        np.save(out / result["labels"], labels, allow_pickle=False)
    else:
        result = {"codes": None, "labels": None, "index": f"{stem}.faiss"}
        index.add(vectors)
        faiss.write_index(index, str(out / result["index"]))
    del index, vectors
    meta = table.select(["id", "caption", "modality"]).take(pa.array(rows))
    meta = meta.add_column(0, "label", pa.array(labels, pa.int64()))
    meta = meta.append_column("shard", pa.array(np.full(len(rows), number), pa.int32()))
    meta = meta.append_column("row", pa.array(rows, pa.int64()))
    result["meta"] = f"{space}-ids/part-{number:05d}.parquet"
    (out / result["meta"]).parent.mkdir(exist_ok=True)
    pq.write_table(meta, out / result["meta"])
    files = [f for f in (result["codes"], result["labels"], result["index"], result["meta"]) if f]
    return {**result, "rows": len(rows), "sha256": {f: sha256_file(out / f) for f in files}}


def build_space(emb_dir: Path, manifest: emb.EmbeddingManifest, space: str, out_dir: Path, *, factory: str,
                train_sample: int, nprobe, ef_search, seed: int, use_ray: bool,
                log) -> tuple[list[dict], dict, dict | None]:
    """Train once and encode every shard of ``space``.

    Returns ``(index.json shard entries, file -> sha256, trained)``, ``trained`` being
    ``{"file", "factory", "params"}`` of ``{space}-trained.faiss`` (None when the space is empty).
    """
    counts = [space_rows(s, space) for s in manifest.shards]
    offsets, total = np.cumsum([0] + counts)[:-1].tolist(), sum(counts)
    blank = [{"space": space, "shard": n, "source": s.file, "rows": 0, "offset": o, "factory": None, "params": {},
              "codes": None, "labels": None, "index": None, "meta": None}
             for n, (s, o) in enumerate(zip(manifest.shards, offsets))]
    if total == 0:
        log(f"[{space}]: no rows with an embedding in this space; nothing to index")
        return blank, {}, None
    if train_sample is None:  # enough for the factory's lists (39 per list), at least DEFAULT_TRAIN_SAMPLE
        planned = resolve_factory(factory, rows=total, dim=manifest.dim, sample=total).factory
        sample = default_train_sample(planned, total, DEFAULT_TRAIN_SAMPLE)
    else:
        sample = min(total, train_sample)
    choice = resolve_factory(factory, rows=total, dim=manifest.dim, sample=sample, nprobe=nprobe, ef_search=ef_search)
    for note in choice.notes:
        log(f"[{space}]: {note}")
    info, template = _train(use_ray, train_memory(sample, manifest.dim), str(emb_dir), manifest, space, sample, seed,
                            choice.factory, str(out_dir))
    jobs = [(n, s, o, c) for n, (s, o, c) in enumerate(zip(manifest.shards, offsets, counts)) if c]
    results = _fill_all(use_ray, emb_dir, jobs, space, template, info["bytes"], out_dir, manifest.dim)
    files = {info["file"]: info["sha256"]}
    for (number, _, _, _), result in zip(jobs, results):
        blank[number].update(rows=result["rows"], factory=choice.factory, params=choice.params,
                             **{key: result[key] for key in ("codes", "labels", "index", "meta")})
        files.update(result["sha256"])
    stored = "codes + one trained index" if info["codes"] else "a whole index per shard"
    log(f"[{space}]: {total} vectors in {len(jobs)} shard(s) ({stored}), "
        f"{choice.factory} {choice.params or ''}".rstrip())
    return blank, files, {"file": info["file"], "factory": choice.factory, "params": choice.params}


def _train(use_ray: bool, memory: int, *args) -> tuple[dict, object]:
    """``(info + {"bytes"}, template)``: on Ray the template stays an ObjectRef (never fetched here)."""
    if not use_ray:
        return _train_task(*args)
    import ray

    info_ref, template_ref = (ray.remote(_train_task).options(num_cpus=1, memory=memory, num_returns=2)
                              .remote(*args))
    return ray.get(info_ref), template_ref


def _train_task(*args) -> tuple[dict, np.ndarray]:
    info, template = sample_and_train(*args)
    return {**info, "bytes": int(template.nbytes)}, template


def _fill_all(use_ray: bool, emb_dir: Path, jobs: list, space: str, template, template_bytes: int, out_dir: Path,
              dim: int) -> list[dict]:
    args = [(str(emb_dir), {"file": s.file, "sha256": s.sha256}, n, space, o) for n, s, o, _ in jobs]
    if not use_ray:
        return [fill_shard(*a, template, str(out_dir)) for a in args]
    import ray

    remote = ray.remote(fill_shard)
    return ray.get([remote.options(num_cpus=1, memory=fill_memory(c, dim, template_bytes))
                    .remote(*a, template, str(out_dir)) for a, (_, _, _, c) in zip(args, jobs)])


def check_train_sample(train_sample: int | None) -> None:
    if train_sample is not None and train_sample < 1:
        raise IndexBuildError(f"--train-sample must be >= 1, got {train_sample}")
