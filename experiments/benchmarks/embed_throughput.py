"""Embedding rows/s through Ray Data (actor pool) against a plain single-process loop, same model.

    .venv/bin/python experiments/benchmarks/embed_throughput.py [--rows 50000] [--batch-size 256]
        [--model medcl-tiny] [--actors 2] [--threads 1] [--plain-threads 1,2] [--image-fraction 1.0]
        [--repeats 3]

A synthetic corpus of ``--rows`` rows is written first (not timed): 512 distinct 32x32 PNG images
(synthmed, all six domains) and their captions, repeated with unique ids, in shards of 10,000 rows.
Both paths then run :func:`medcl.corpus.embed.embed_corpus` on it, so they do the same work per
row: read the Parquet shards, decode every PNG with PIL, preprocess exactly as training does,
encode image and text with the same model, write embedding shards and the manifest. Same batch
size for both. Timed from the call to the manifest written; the Ray path includes starting its
actors (each imports torch and open_clip and builds the model) but not ``ray.init`` (reported apart
as ``ray_init_s``). The plain loop runs in this process, which has imported torch and open_clip
before its first timed run of the second round onwards (and the file cache is warm for every run
after the first); the Ray path is timed twice on each fresh cluster: ``ray_data_cold`` is the cluster's first Ray Data job, which also starts Ray Data's
per-cluster detached actors (statistics, autoscaling coordinator, actor locations: 1 to 3 s on
this machine), ``ray_data`` the second, as every later job on a running cluster finds them
(``ratio`` uses it; ``ratio_cold`` the first).

Fair comparison on a 2-core machine: the plain loop is run with 1 and with 2 torch threads
(``--plain-threads``) and the best is the reference; Ray Data runs ``--actors`` actors with
``--threads`` torch threads each (default 2 x 1: one core per actor) and ``num_cpus=0.5`` per actor.
Each figure is the median of ``--repeats`` rounds (a round: the plain runs, then a fresh Ray
cluster's two jobs), since single runs on this 2-core machine spread by 20 % (22.7 to 29.0 s for the
same Ray job). Prints JSON: rows/s of each plain run, of both Ray Data runs, every round's seconds
(``runs_s``), and ``ratio = ray / best plain`` (target >= 0.75).
Each run also reports ``cpu_s``, the machine's busy CPU seconds during the run (Ray's raylet, GCS,
workers and actors included, also those that exit before the run ends), and rows per CPU-second;
``cpu_ratio`` compares those. Both count everything running, so measure on a quiet machine
(``load_average`` is printed so a reader can tell). Before 2026-12-03 ``cpu_s`` summed this
process's live descendants, which missed Ray workers that had exited by the second reading.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from medcl.engine.loopback import prepare_local_environment  # noqa: E402

prepare_local_environment()  # before ray is imported: keeps the local Ray on loopback

DISTINCT = 512


def write_corpus(directory: Path, rows: int, image_fraction: float, shard_rows: int = 10_000) -> None:
    import pyarrow as pa

    from medcl.corpus.sources.synthmed import png_bytes
    from medcl.corpus.store import write_corpus_manifest, write_corpus_shard
    from medcl.data import BENCHMARKS
    from medcl.data.synthmed import captioned_pairs

    tasks = BENCHMARKS.get("synthmed")().build({"num_tasks": 6, "train_per_class": 18}, seed=0)
    pairs = list(captioned_pairs(tasks))[:DISTINCT]
    images = [png_bytes(p["image"]) for p in pairs]
    written = []
    for index, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        picks = [(start + i) % len(pairs) for i in range(n)]
        with_image = [(start + i) % 1000 < image_fraction * 1000 for i in range(n)]
        table = pa.table({"id": [f"bench:{start + i}" for i in range(n)],
                          "image": pa.array([images[p] if w else None for p, w in zip(picks, with_image)], pa.binary()),
                          "caption": [pairs[p]["caption"] for p in picks], "source": ["bench"] * n,
                          "modality": [pairs[p]["modality"] for p in picks], "license": ["CC0-1.0"] * n})
        written.append(write_corpus_shard(directory, index, table))
    write_corpus_manifest(directory, written, {"bench": rows})


def cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (``psutil.cpu_times()``: all but idle, iowait, steal,
    and guest time, which Linux already counts in user).

    Counting this process's descendants instead misses every Ray worker that has exited by the
    second reading (the raylet does not collect their times), which made the Ray path's figure vary
    by 20 CPU-seconds between runs; machine-wide time counts them, and everything else running,
    so the figure holds on a quiet machine only (``load_average`` is printed)."""
    import psutil

    times = psutil.cpu_times()
    not_busy = ("idle", "iowait", "steal", "guest", "guest_nice")
    return sum(times) - sum(getattr(times, field, 0.0) for field in not_busy)


def timed(corpus: Path, out: Path, info, **kwargs) -> dict:
    """Wall time and CPU time (this process + descendants) of one embed_corpus call."""
    from medcl.corpus.embed import embed_corpus

    cpu, started = cpu_seconds(), time.perf_counter()
    result = embed_corpus(corpus, out, info, **kwargs)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"seconds": round(seconds, 2), "rows_per_s": round(result.rows / seconds, 1), "rows": result.rows,
            "cpu_s": round(cpu, 2), "rows_per_cpu_s": round(result.rows / cpu, 1)}


def one_round(corpus: Path, out: Path, info, args) -> dict:
    """One plain run per ``--plain-threads`` value, then a fresh Ray cluster's first and second job."""
    import ray
    import torch

    runs = {}
    for threads in [int(t) for t in args.plain_threads.split(",")]:
        torch.set_num_threads(threads)
        runs[f"threads_{threads}"] = timed(corpus, out / f"plain{threads}", info, batch_size=args.batch_size,
                                           threads=threads, use_ray=False)
    torch.set_num_threads(1)  # the driver only reads batches and writes shards
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING)
    runs["ray_init_s"] = round(time.perf_counter() - started, 2)
    try:  # the first job creates Ray Data's per-cluster (detached) actors; the second finds them
        for run in ("cold", "warm"):
            runs[f"ray_{run}"] = timed(corpus, out / f"ray-{run}", info, batch_size=args.batch_size,
                                       actors=args.actors, threads=args.threads, use_ray=True)
    finally:
        ray.shutdown()
    return runs


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (the lower middle one for an even count), with every run's seconds."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs_s": [r["seconds"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model", default="medcl-tiny")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per Ray actor")
    parser.add_argument("--plain-threads", default="1,2", help="torch threads of the plain loop runs")
    parser.add_argument("--image-fraction", type=float, default=1.0, help="share of rows that have an image")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each figure is its median run")
    args = parser.parse_args()

    import shutil

    from medcl.corpus.embed import ModelInfo

    info = ModelInfo(args.model)
    result = {"rows": args.rows, "batch_size": args.batch_size, "model": args.model, "cpus": os.cpu_count(),
              "image_fraction": args.image_fraction, "repeats": args.repeats}
    rounds = []
    with tempfile.TemporaryDirectory(prefix="medcl-embed-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        write_corpus(corpus, args.rows, args.image_fraction)
        for number in range(args.repeats):
            rounds.append(one_round(corpus, Path(tmp) / f"round{number}", info, args))
            shutil.rmtree(Path(tmp) / f"round{number}")
    keys = [k for k in rounds[0] if k.startswith("threads_")]
    plain = {key: median_run([r[key] for r in rounds]) for key in keys}
    warm, cold = (median_run([r[f"ray_{run}"] for r in rounds]) for run in ("warm", "cold"))
    best = max(plain.values(), key=lambda r: r["rows_per_s"])
    best_cpu = max(plain.values(), key=lambda r: r["rows_per_cpu_s"])
    result.update(plain=plain, ray_data={**warm, "actors": args.actors, "threads_per_actor": args.threads},
                  ray_data_cold=cold, ray_init_s=[r["ray_init_s"] for r in rounds],
                  ratio=round(warm["rows_per_s"] / best["rows_per_s"], 3),
                  ratio_cold=round(cold["rows_per_s"] / best["rows_per_s"], 3), target=0.75,
                  cpu_ratio=round(warm["rows_per_cpu_s"] / best_cpu["rows_per_cpu_s"], 3),
                  load_average=[round(x, 1) for x in os.getloadavg()])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
