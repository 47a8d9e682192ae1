"""In-process FAISS queries/s of the ``auto`` index at a given size (for docs/corpus.md's sizing table).

    .venv/bin/python experiments/benchmarks/index_qps.py [--rows 24000 1000000] [--dim 512] [--batch 256]
        [--batches 8] [--threads 1 2] [--coarse-lists 16384 65536]

Per size n, the factory and nprobe are what ``medcl index build --factory auto`` picks
(``index_factory.resolve_factory``), and the index is filled with n synthetic vectors, then
``--batches`` batches of ``--batch`` queries (top 10) are timed with each ``--threads`` FAISS
thread count. Reported: queries/s, ms per query per thread (queries/s per core is
``1000 / that``), the index's serialised bytes per vector, and the load average. ``coarse``: the
time of the coarse-quantizer search alone (``--coarse-lists`` centroids, 1 thread), which every
index shard of ``medcl index build`` repeats, since each shard file holds its own copy of the quantizer.

Queries/s of an IVF index depend on the work per query (the coarse search over L centroids, the
``nprobe`` lists scanned, the code size), not on how good the clustering is. So for IVF-PQ sizes
(n >= 200k), where k-means over L = 16384 lists and assigning n vectors to them would take this
2-core machine hours, the index is built with its real shape but a synthetic clustering: L random
unit centroids, every vector = a centroid (drawn uniformly) + noise, added to its own centroid's
list (``add_core`` with the assignment precomputed); the OPQ rotation is the identity (applying it
costs the same d x d product per query as a trained one) and the PQ codebooks are trained on a 20k
sample with 4 k-means iterations. Lists are therefore balanced (k-means lists are somewhat
uneven, which makes real queries a little slower); recall is not measured here
(experiments/benchmarks/index_recall.py does that). IVF-Flat sizes (< 200k) are built and trained
as ``index build`` does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import faiss
import numpy as np

from medcl.corpus.index_factory import apply_search_params, new_index, resolve_factory

TRAIN_SAMPLE = 20_000


def _progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _normalised(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(rows: int, dim: int, lists: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centroids, vectors, assignment)``: unit centroids and unit vectors near their centroid."""
    centroids = _normalised(rng.standard_normal((lists, dim), dtype=np.float32))
    assignment = rng.integers(0, lists, rows)
    vectors = np.empty((rows, dim), np.float32)
    for start in range(0, rows, 100_000):
        part = slice(start, min(rows, start + 100_000))
        noise = rng.standard_normal((part.stop - part.start, dim), dtype=np.float32) * 0.03
        vectors[part] = _normalised(centroids[assignment[part]] + noise)
    return centroids, vectors, assignment


def build_flat_ivf(factory: str, vectors: np.ndarray) -> faiss.Index:
    index = new_index(factory, vectors.shape[1])
    index.train(vectors)
    index.add(vectors)
    return index


def build_ivfpq(factory: str, centroids: np.ndarray, vectors: np.ndarray, assignment: np.ndarray) -> faiss.Index:
    """The ``OPQ{m},IVF{L},PQ{m}[,Refine(SQ8)]`` index with the synthetic clustering (module
    docstring); a refine stage is trained on the same sample and holds every vector's code."""
    outer = new_index(factory, vectors.shape[1])
    refine = faiss.downcast_index(outer.refine_index) if isinstance(outer, faiss.IndexRefine) else None
    index = faiss.downcast_index(outer.base_index) if refine is not None else outer
    opq = faiss.downcast_VectorTransform(index.chain.at(0))
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    faiss.copy_array_to_vector(np.eye(opq.d_in, dtype=np.float32).ravel(), opq.A)  # a rotation, untrained:
    opq.is_trained = True  # the same d x d product per query as a trained one
    picked = np.random.default_rng(1).choice(len(vectors), TRAIN_SAMPLE, replace=False)
    rotated_centroids = opq.apply(centroids)
    ivf.quantizer.add(rotated_centroids)
    sample_rotated, sample_lists = opq.apply(vectors[picked]), assignment[picked]
    ivf.pq.cp.niter = 4
    _progress("coarse quantizer set")
    ivf.pq.train(sample_rotated - rotated_centroids[sample_lists])
    ivf.is_trained = index.is_trained = True
    for start in range(0, len(vectors), 100_000):
        part = opq.apply(vectors[start:start + 100_000])
        lists = assignment[start:start + 100_000].astype(np.int64)
        ids = np.arange(start, start + len(part), dtype=np.int64)
        ivf.add_core(len(part), faiss.swig_ptr(part), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
    index.ntotal = ivf.ntotal
    if refine is not None:
        refine.train(vectors[picked])
        refine.add(vectors)
        outer.is_trained, outer.ntotal = True, index.ntotal
    _progress(f"{ivf.ntotal} vectors added")
    return outer


def measure(index: faiss.Index, queries: np.ndarray, batch: int, threads: int) -> dict:
    faiss.omp_set_num_threads(threads)
    index.search(queries[:batch], 10)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        index.search(queries[start:start + batch], 10)
    seconds = time.perf_counter() - started
    qps = len(queries) / seconds
    return {"threads": threads, "queries_per_s": round(qps, 1), "ms_per_query_per_thread": round(1000 * threads / qps, 3)}


def coarse_cost(lists: int, dim: int, batch: int, batches: int) -> dict:
    """ms per query (1 thread) of the coarse search alone: ``batch`` queries against ``lists``
    centroids (IndexFlatIP, top nprobe), the part of a search that every index shard repeats."""
    rng = np.random.default_rng(2)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(_normalised(rng.standard_normal((lists, dim), dtype=np.float32)))
    queries = _normalised(rng.standard_normal((batch * batches, dim), dtype=np.float32))
    nprobe = max(16, lists // 8)
    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        quantizer.search(queries[start:start + batch], nprobe)
    seconds = time.perf_counter() - started
    return {"lists": lists, "nprobe": nprobe, "ms_per_query_per_thread": round(1000 * seconds / len(queries), 3)}


def one_size(rows: int, args) -> dict:
    choice = resolve_factory("auto", rows=rows, dim=args.dim, sample=rows)
    lists = faiss.extract_index_ivf(new_index(choice.factory, args.dim)).nlist
    rng = np.random.default_rng(0)
    centroids, vectors, assignment = clustered(rows, args.dim, lists, rng)
    _progress(f"{rows} vectors generated")
    started = time.perf_counter()
    if "PQ" in choice.factory:
        index = build_ivfpq(choice.factory, centroids, vectors, assignment)
    else:
        index = build_flat_ivf(choice.factory, vectors)
    build_s = time.perf_counter() - started
    apply_search_params(index, choice.params)
    queries = vectors[rng.choice(rows, args.batch * args.batches, replace=False)] + 0.0
    del vectors
    result = {"rows": rows, "dim": args.dim, "factory": choice.factory, "params": choice.params,
            "synthetic_clustering": "PQ" in choice.factory, "build_s": round(build_s, 1),
            "bytes_per_vector": round(faiss.serialize_index(index).nbytes / rows, 1),
            "search": [measure(index, queries, args.batch, t) for t in args.threads],
            "load_average": [round(x, 1) for x in os.getloadavg()]}
    _progress(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[24_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--coarse-lists", type=int, nargs="*", default=[16384, 65536],
                        help="also time the coarse search alone against this many centroids")
    args = parser.parse_args()
    sizes = [one_size(rows, args) for rows in args.rows]
    coarse = [coarse_cost(lists, args.dim, args.batch, 2) for lists in args.coarse_lists]
    print(json.dumps({"cpus": os.cpu_count(), "batch": args.batch, "k": 10, "sizes": sizes, "coarse": coarse,
                      "load_average": [round(x, 1) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
