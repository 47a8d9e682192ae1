"""``medcl index``: FAISS index shards over embedding shards, and queries against them.

    medcl index build EMB_DIR --out INDEX_DIR [--factory auto|ivf|hnsw|flat|"OPQ16,IVF256,PQ16"...]
                      [--space text|image|both] [--train-sample N] [--nprobe N] [--ef-search N] [--local]
    medcl index query INDEX_DIR "text" [-k 10] [--space text|image]

EMB_DIR, INDEX_DIR and ``--out`` may be object-store URIs (``s3://bucket/index``, ``gs://...``): the
build writes each file in a local scratch folder and uploads it; a query downloads the index once per
node into the node's cache (``$MEDCL_CACHE``) and loads it from there.
"""
from __future__ import annotations

import sys

from medcl.paths import cli_place

CAPTION_WIDTH = 110


def register(subparsers) -> None:
    group = subparsers.add_parser("index", help="build FAISS indexes over corpus embeddings and query them")
    commands = group.add_subparsers(dest="index_command", required=True)
    build = commands.add_parser("build", help="one global FAISS index per space (filled shard by shard on Ray), plus index.json")
    build.add_argument("embeddings", type=cli_place,
                       help="embedding directory (medcl corpus embed --out): a path or a URI such as s3://b/emb")
    build.add_argument("--out", type=cli_place, required=True,
                       help="index directory to write: a path or a URI such as s3://bucket/index")
    build.add_argument("--factory", default="auto",
                       help="auto (default: sized from the row count, docs/corpus.md), ivf (IVF with 4*sqrt(rows) "
                            "lists), hnsw (HNSW32), flat (exact), or a FAISS factory string such as "
                            "'IVF1024,Flat', 'HNSW16', 'OPQ16,IVF256,PQ16'")
    build.add_argument("--space", default="both", choices=["text", "image", "both"],
                       help="which embeddings to index (text-only entries exist in the text space only)")
    build.add_argument("--train-sample", type=int, default=None,
                       help="vectors used to train the space's one IVF/PQ quantizer (default: 39 per IVF list, "
                            "at least 100000, capped by the rows)")
    build.add_argument("--local", action="store_true", help="fill the shards in this process instead of Ray tasks")
    build.add_argument("--nprobe", type=int, default=None, help="IVF lists searched per query (default: max(16, lists/8))")
    build.add_argument("--ef-search", type=int, default=None, help="HNSW search breadth (default: 128)")
    build.set_defaults(handler=_build)
    query = commands.add_parser("query", help="top-k captions for a text, embedded with the index's model")
    query.add_argument("index_dir", type=cli_place, help="index directory: a path or a URI such as s3://bucket/index")
    query.add_argument("text")
    query.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    query.add_argument("--space", default="text", choices=["text", "image"],
                       help="search caption embeddings (text) or image embeddings (image) with the text's embedding")
    query.set_defaults(handler=_query)


def _fail(exc: Exception) -> int:
    print(f"medcl: error: {exc}", file=sys.stderr)
    return 2


def _build(args) -> int:
    from medcl.corpus.index import build_index

    if not args.local:
        from medcl.engine.cluster import connect

        connect()
        refused = _node_local_places(args)
        if refused:
            return _fail(refused)
    manifest = build_index(args.embeddings, args.out, factory=args.factory, space=args.space,
                           train_sample=args.train_sample, nprobe=args.nprobe, ef_search=args.ef_search)
    spaces = ", ".join(f"{s}: {sum(e['rows'] for e in manifest.entries(s))} vectors" for s in manifest.spaces)
    print(f"index of {len(manifest.shard_numbers)} shard(s) in {args.out} (dim {manifest.dim}; {spaces})")
    return 0


def _node_local_places(args) -> str | None:
    """Why the build cannot run, when EMB_DIR or ``--out`` is a local path that some node of a
    multi-node cluster does not see (the build's Ray tasks read the embeddings and write the index
    files on any node); None when both are shared (or URIs, or the cluster has one node)."""
    from medcl.engine.shared import check_shared
    from medcl.storage import StorageError

    writers = "the index build's Ray tasks read the embeddings and write the index files"
    try:
        check_shared(args.embeddings, field="EMB_DIR", output=False, writers=writers)
        check_shared(args.out, field="--out", output=True, writers=writers,  # last: the probe creates it
                     fix="e.g. --out s3://BUCKET/index or gs://BUCKET/index")
    except StorageError as exc:
        return str(exc)
    return None


def table_cell(caption: str, width: int | None = None) -> str:
    """``caption`` on one line of the query table: every run of whitespace (newlines, tabs) one
    space, then cut to ``width`` (default ``CAPTION_WIDTH``) with "..."."""
    width = CAPTION_WIDTH if width is None else width
    text = " ".join(str(caption).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _query(args) -> int:
    from medcl.corpus.retrieval import LocalRetriever

    try:
        retriever = LocalRetriever(args.index_dir)
        result = retriever.search_text([args.text], args.k, space=args.space)
    except ValueError as exc:  # k or space the index cannot answer
        return _fail(exc)
    print(f"{'rank':>4}  {'score':>7}  {'id':<28} {'modality':<10} caption")
    for rank, (hit, score, modality, caption) in enumerate(
            zip(result.ids[0], result.scores[0], result.modalities[0], result.captions[0]), start=1):
        if not hit:
            break
        text = table_cell(caption)
        print(f"{rank:>4}  {score:7.4f}  {hit:<28} {modality:<10} {text}")
    return 0
