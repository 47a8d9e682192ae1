"""Retrieval service throughput and latency against FAISS called in-process on the same indexes.

    .venv/bin/python experiments/benchmarks/retrieval_service.py [--rows 100000] [--dim 512] [--shards 2]
        [--factory ivf] [--batch 256] [--k 10] [--batches 40] [--in-flight 4] [--replicas 1] [--index DIR]

Builds ``--shards`` index shards over ``--rows`` synthetic clustered vectors (or uses ``--index``),
then answers ``--batches`` batches of ``--batch`` queries, top ``--k``, three ways:

* ``in_process``: ``LocalRetriever`` (every shard searched in this process, FAISS with its default
  threads = all cores, then the top-k merge), one batch after another;
* ``service_sequential``: ``RetrievalService`` (one Ray actor per shard, 1 FAISS thread each, so the
  shards are searched in parallel), one batch at a time: latency of a lone batch;
* ``service_pipelined``: the same service with ``--in-flight`` batches submitted before the oldest
  is collected (``submit`` / ``result``), which hides the round trip (object store put, two actor
  calls, pickled results, merge) behind the other batches' searches.

Prints JSON: queries/s and per-batch latency p50/p99 (ms) for each, and each service mode's
throughput as a fraction of in-process (target >= 0.8). Starts its own local Ray (``--cpus``, no
dashboard) and shuts it down.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _stats(latencies: list[float], queries: int, wall: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"queries_per_s": round(queries / wall), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "batches": len(latencies)}


def _sequential(search, batches: list[np.ndarray]) -> dict:
    latencies, started = [], time.perf_counter()
    for queries in batches:
        t0 = time.perf_counter()
        search(queries)
        latencies.append(time.perf_counter() - t0)
    return _stats(latencies, sum(len(b) for b in batches), time.perf_counter() - started)


def _pipelined(service, batches: list[np.ndarray], k: int, in_flight: int) -> dict:
    window, latencies = collections.deque(), []
    started = time.perf_counter()
    for queries in batches:
        window.append((time.perf_counter(), service.submit(queries, k)))
        if len(window) >= in_flight:
            sent, pending = window.popleft()
            pending.result()
            latencies.append(time.perf_counter() - sent)
    while window:
        sent, pending = window.popleft()
        pending.result()
        latencies.append(time.perf_counter() - sent)
    return _stats(latencies, sum(len(b) for b in batches), time.perf_counter() - started)


def _index(args, work: Path) -> Path:
    if args.index:
        return Path(args.index)
    from medcl.corpus.index import build_index
    from medcl.corpus.synthetic_vectors import write_embedding_dir

    write_embedding_dir(work / "emb", rows=args.rows, dim=args.dim, shards=args.shards, image_every=None,
                        clusters=args.clusters, seed=0)
    build_index(work / "emb", work / "index", factory=args.factory, space="text", log=lambda _: None)
    return work / "index"


def _service(index_dir: Path, batches, args) -> dict:
    import ray

    from medcl.corpus.service import RetrievalService

    # Ray gives its raylet 30 s to register with the GCS: on an overloaded machine ray.init can fail;
    # run again then (a failed init leaves its processes behind, so it is not retried here)
    ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR")
    try:
        service = RetrievalService.start(index_dir, replicas=args.replicas, name="bench-retrieval", num_cpus=0.25)
        try:
            for queries in batches[:3]:  # warm-up
                service.search(queries, args.k)
            return {"service_sequential": _sequential(lambda q: service.search(q, args.k), batches),
                    "service_pipelined": _pipelined(service, batches, args.k, args.in_flight)}
        finally:
            service.stop()
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--factory", default="ivf")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray started here")
    parser.add_argument("--index", default=None, help="an existing index directory instead of a synthetic one")
    args = parser.parse_args()
    from medcl.corpus.index import read_index_manifest
    from medcl.corpus.retrieval import LocalRetriever
    from medcl.corpus.synthetic_vectors import clustered_vectors

    with tempfile.TemporaryDirectory(prefix="medcl-service-bench-") as tmp:
        index_dir = _index(args, Path(tmp))
        manifest = read_index_manifest(index_dir)
        queries = clustered_vectors(args.batch * args.batches, manifest.dim, clusters=args.clusters, draw=1)
        batches = np.array_split(queries, args.batches)
        local = LocalRetriever(index_dir)
        for q in batches[:3]:
            local.search(q, args.k)
        report = {"rows": sum(e["rows"] for e in manifest.entries("text")), "dim": manifest.dim,
                  "shards": len(manifest.shard_numbers), "factory": sorted({e["factory"] for e in manifest.shards}),
                  "batch": args.batch, "k": args.k, "in_flight": args.in_flight, "replicas": args.replicas,
                  "in_process": _sequential(lambda q: local.search(q, args.k), batches)}
        report.update(_service(index_dir, batches, args))
    base = report["in_process"]["queries_per_s"]
    for mode in ("service_sequential", "service_pipelined"):
        report[mode]["fraction_of_in_process"] = round(report[mode]["queries_per_s"] / base, 3)
    report["target_fraction"] = 0.8
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
