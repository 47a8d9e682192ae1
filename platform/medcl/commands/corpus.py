"""``medcl corpus build|embed``: corpus sources to one schema, and embeddings on Ray Data.

    medcl corpus build SPEC.yaml --out DIR [--strict] [--local]
    medcl corpus embed CORPUS_DIR --out DIR --model NAME [--pretrained PATH | --run RUN_DIR] [--gpus N]
                       [--batch-size N] [--actors N] [--threads N] [--shard-rows N] [--local]

Both start (or join, with RAY_ADDRESS) Ray unless ``--local`` runs the same steps in this process.
A bad spec, a missing source, a strict-mode bad row or a corrupt shard is one message, status 2.
``--out``, CORPUS_DIR and ``--run`` take a local path, a shared mount or an object-store URI
(``s3://bucket/corpus``, ``gs://...``; see medcl.storage). On a cluster of several nodes a local
``--out``, CORPUS_DIR or weights file (``--pretrained``, ``--run``'s checkpoint) that some node does
not see is refused before any work, naming the argument and the fix (engine/shared.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from medcl.paths import cli_place, is_weights_file, resolve_weights


def register(subparsers) -> None:
    corpus = subparsers.add_parser("corpus", help="build an image-caption corpus and embed it")
    commands = corpus.add_subparsers(dest="corpus_command", required=True)
    build = commands.add_parser("build", help="read the sources of SPEC.yaml into Parquet shards (one schema)")
    build.add_argument("spec", type=Path)
    build.add_argument("--out", type=cli_place, required=True, help="corpus directory or URI (s3://...) to (re)write")
    build.add_argument("--strict", action="store_true", help="fail on the first bad row instead of skipping it")
    build.add_argument("--local", action="store_true", help="normalise in this process instead of on Ray Data")
    build.set_defaults(handler=_build)
    embed = commands.add_parser("embed", help="image and text embeddings of a corpus (Ray Data actor pool)")
    embed.add_argument("corpus_dir", type=cli_place, help="corpus directory or URI (medcl corpus build --out)")
    embed.add_argument("--out", type=cli_place, required=True, help="embedding directory or URI (s3://...) to (re)write")
    embed.add_argument("--model", default=None, help="model name (medcl list models); default: the run's")
    weights = embed.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", type=resolve_weights, default=None, help="weights file (.safetensors/.pt) or open_clip tag")
    weights.add_argument("--run", type=cli_place, default=None, help="run directory or URI: its model and newest checkpoint")
    embed.add_argument("--batch-size", type=int, default=256)
    embed.add_argument("--actors", type=int, default=2, help="actor pool size (one model per actor)")
    embed.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    embed.add_argument("--shard-rows", type=int, default=50_000, help="rows per embedding shard")
    embed.add_argument("--seed", type=int, default=0, help="torch seed before building a randomly initialised model")
    embed.add_argument("--gpus", type=int, default=0, help="GPU actors, one GPU each (0: --actors CPU actors); "
                       "waited for when the cluster has none yet, never replaced by CPUs")
    embed.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16",
                       help="inference precision on GPU (autocast); CPU actors always run fp32")
    embed.add_argument("--local", action="store_true", help="embed in this process instead of on Ray Data")
    embed.set_defaults(handler=_embed)


def _build(args) -> int:
    from medcl.corpus.build import build_corpus
    from medcl.corpus.spec import load_spec

    spec = load_spec(args.spec)
    if not args.local:
        _connect()
        _check_shared(args.out, "--out", output=True)
    report = build_corpus(spec, args.out, strict=args.strict, use_ray=not args.local,
                          log=lambda m: print(f"medcl: {m}", flush=True))
    summary = {name: {k: s[k] for k in ("read", "written", "skipped")} for name, s in report["sources"].items()}
    print(json.dumps({"out": str(args.out), "rows": report["rows"], "shards": report["shards"], "sources": summary}))
    return 0


def _embed(args) -> int:
    from medcl.corpus.embed import ModelInfo, embed_corpus, model_from_run

    if args.run is not None:
        info = model_from_run(args.run)
        info = ModelInfo(args.model or info.name, info.pretrained, info.image_size, args.seed)
    elif args.model:
        info = ModelInfo(args.model, args.pretrained, None, args.seed)
    else:
        print("medcl: error: corpus embed needs --model NAME (or --run RUN_DIR)", file=sys.stderr)
        return 2
    warning = random_weights_warning(info)
    if warning:
        print(f"medcl: warning: {warning}", file=sys.stderr, flush=True)
    for flag in ("batch_size", "actors", "threads", "shard_rows"):
        if getattr(args, flag) < 1:
            print(f"medcl: error: --{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    if not args.local:
        _connect()
        _check_shared(args.corpus_dir, "CORPUS_DIR", output=False)
        if info.pretrained and is_weights_file(info.pretrained):  # every model actor loads it
            _check_shared(info.pretrained, "--run" if args.run is not None else "--pretrained", output=False)
        _check_shared(args.out, "--out", output=True)  # last: the probe creates the directory
    if args.gpus < 0:
        print(f"medcl: error: --gpus must be >= 0, got {args.gpus}", file=sys.stderr)
        return 2
    result = embed_corpus(args.corpus_dir, args.out, info, batch_size=args.batch_size, actors=args.actors,
                          threads=args.threads, shard_rows=args.shard_rows, use_ray=not args.local,
                          gpus=args.gpus, precision=args.precision,
                          log=lambda m: print(f"medcl: {m}", flush=True))
    print(json.dumps({"out": str(result.out), "rows": result.rows, "with_image": result.with_image,
                      "shards": result.shards, "model": result.model}))
    return 0


def random_weights_warning(info) -> str | None:
    """One line when ``info`` (a :class:`~medcl.corpus.embed.ModelInfo`) has no weights: a randomly
    initialised model's embeddings carry no meaning (every image hit of a query scores about the same,
    near 0), so an index built on them retrieves at random; None when weights are given."""
    if info.pretrained:
        return None
    return (f"--model {info.name} without --pretrained or --run embeds with random weights (seed {info.seed}): "
            "retrieval scores will be near 0 and rankings meaningless; pass --run RUN_DIR (a trained run) or "
            "--pretrained FILE for a useful index")


def _connect() -> None:
    from medcl.engine.cluster import connect

    connect()


def _check_shared(value, flag: str, *, output: bool) -> None:
    """Refuse (StorageError, status 2) a local ``flag`` that some node of a multi-node cluster does
    not see: Ray Data tasks read and write it on every node."""
    from medcl.corpus.spec import CorpusError
    from medcl.engine.shared import check_shared
    from medcl.storage import StorageError

    try:
        check_shared(value, field=flag, output=output, writers="Ray Data tasks write the shards",
                     fix=f"e.g. {flag} s3://BUCKET/corpus or gs://BUCKET/corpus")
    except StorageError as exc:
        raise CorpusError(str(exc)) from None
