"""Recall@10 of index settings (the defaults included) against exact search.

    .venv/bin/python experiments/benchmarks/index_recall.py [--rows 100000] [--dim 512] [--queries 1000]
        [--clusters 1000] [--noise 1.0 3.0] [--factories ivf hnsw auto auto@1000000 ...]
        [--train-sample N] [--shards 1] [--embeddings EMB_DIR ...] [--skip-synthetic]

``--factories`` takes what ``medcl index build --factory`` takes, plus ``auto@N``: the factory
``--factory auto`` would choose for N rows of this dimension (index_factory.auto_factory), so the
compressed factory of a 1M or 18M corpus can be measured on a smaller one (its IVF lists then fall
back to one per 39 training vectors, as the build reports). ``--train-sample`` is passed to the
build (default: the build's own, 39 per list, at least 100,000).

Synthetic data: ``--rows`` L2-normalised vectors around ``--clusters`` random unit centres
(``medcl.corpus.synthetic_vectors.clustered_vectors``: x = normalise(c + noise * g / sqrt(dim))),
one data set per ``--noise`` value, one index shard; queries are fresh draws around the same centres. Real data: every ``--embeddings``
directory (``medcl corpus embed`` output, e.g. ROCO + MedPix) is indexed in the text space and
queried with ``--queries`` of its own text embeddings plus a little noise (a vector's exact
duplicate would be trivially found). Recall@10 = |top-10 of the index & exact top-10| / 10, averaged
over queries. Prints JSON: per data set and factory, the FAISS factory and search parameters used,
build seconds, queries per second (one batch, FAISS's own threads), recall@10, and the bytes per
vector of the shard files (codes + labels) and of the trained index (stored once).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

K = 10


def _recall(got: list[list[str]], want: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want)]))


def _factory(spec: str, dim: int) -> str:
    """``auto@N`` -> what ``auto`` picks for N rows of ``dim``; anything else as given."""
    from medcl.corpus.index_factory import auto_factory

    if spec.lower().startswith("auto@"):
        return auto_factory(int(spec.split("@", 1)[1]), dim)
    return spec


def _bytes_per_vector(index_dir: Path, manifest) -> dict:
    from medcl.publish import resolve

    index_dir = Path(resolve(index_dir))  # the version index_dir/CURRENT names (medcl.publish)
    entries = [e for e in manifest.entries("text") if e["rows"]]
    vectors = sum(e["rows"] for e in entries)
    shard = sum((index_dir / e[key]).stat().st_size for e in entries for key in ("codes", "labels", "index")
                if e.get(key))
    trained = manifest.trained.get("text")
    return {"shard_bytes_per_vector": round(shard / vectors, 1),
            "trained_index_bytes": (index_dir / trained["file"]).stat().st_size if trained else 0}


def _measure(emb_dir: Path, work: Path, queries: np.ndarray, args) -> dict:
    from medcl.corpus.index import build_index
    from medcl.corpus.retrieval import LocalRetriever

    build_index(emb_dir, work / "flat", factory="flat", space="text", log=lambda _: None)
    exact = LocalRetriever(work / "flat").search(queries, K).ids
    out = {}
    for number, spec in enumerate(args.factories):
        notes, factory, index_dir = [], _factory(spec, queries.shape[1]), work / f"index{number}"
        started = time.perf_counter()
        manifest = build_index(emb_dir, index_dir, factory=factory, space="text", train_sample=args.train_sample,
                               log=notes.append)
        built = time.perf_counter() - started
        retriever = LocalRetriever(index_dir)
        started = time.perf_counter()
        got = retriever.search(queries, K).ids
        searched = time.perf_counter() - started
        entry = manifest.entries("text")[0]
        out[spec] = {"asked": factory, "faiss_factory": entry["factory"], "params": entry["params"],
                     "build_s": round(built, 2), "queries_per_s": round(len(queries) / searched),
                     f"recall@{K}": round(_recall(got, exact), 4), **_bytes_per_vector(index_dir, manifest),
                     "notes": notes}
    return out


def _synthetic(args, noise: float, work: Path) -> dict:
    from medcl.corpus.synthetic_vectors import clustered_vectors, write_embedding_dir

    emb_dir = write_embedding_dir(work / "emb", rows=args.rows, dim=args.dim, shards=args.shards, image_every=None,
                                  clusters=args.clusters, noise=noise, seed=args.seed)
    queries = clustered_vectors(args.queries, args.dim, clusters=args.clusters, noise=noise, seed=args.seed, draw=1)
    return {"rows": args.rows, "dim": args.dim, "clusters": args.clusters, "noise": noise,
            "results": _measure(emb_dir, work, queries, args)}


def _real(emb_dir: Path, args, work: Path) -> dict:
    from medcl.corpus import shards
    from medcl.corpus.synthetic_vectors import normalise

    manifest = shards.read_manifest(emb_dir)
    text = np.concatenate([shards.vectors(shards.read_shard(emb_dir, s, ["text_embedding"]), "text_embedding")
                           for s in manifest.shards])
    rng = np.random.default_rng(args.seed)
    picked = text[rng.choice(len(text), min(args.queries, len(text)), replace=False)]
    queries = normalise(picked + 0.05 * rng.standard_normal(picked.shape, dtype=np.float32) / np.sqrt(picked.shape[1]))
    return {"embeddings": str(emb_dir), "rows": int(len(text)), "dim": manifest.dim, "model": manifest.model.get("name"),
            "shards": len(manifest.shards), "results": _measure(emb_dir, work, queries, args)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, nargs="+", default=[1.0, 3.0],
                        help="one synthetic data set per value: 1 = tight clusters, 3 = heavily overlapping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--factories", nargs="+", default=["ivf", "hnsw", "auto"],
                        help="factories to measure: --factory values of medcl index build, or auto@ROWS")
    parser.add_argument("--train-sample", type=int, default=None, help="index build --train-sample")
    parser.add_argument("--shards", type=int, default=1, help="embedding shards of the synthetic data set")
    parser.add_argument("--embeddings", type=Path, nargs="*", default=[],
                        help="embedding directories (medcl corpus embed) to measure as well")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    report = {"k": K, "target": 0.9, "train_sample": args.train_sample}
    with tempfile.TemporaryDirectory(prefix="medcl-recall-") as tmp:
        if not args.skip_synthetic:
            report["synthetic"] = [_synthetic(args, noise, Path(tmp) / f"synthetic{i}")
                                   for i, noise in enumerate(args.noise)]
        report["real"] = [_real(d, args, Path(tmp) / f"real{i}") for i, d in enumerate(args.embeddings)]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
