"""The driver's peak memory of ``medcl pretrain`` on a corpus directory, at two corpus sizes.

    .venv/bin/python experiments/benchmarks/pretrain_stream_memory.py [--rows 5000,20000] [--image-size 64]
        [--batch-size 64] [--epochs 1]

For each size a synthetic corpus is written first (in this process, not measured): ``rows`` rows in
the corpus schema, in shards of 5,000 rows, each image one of 256 distinct 48x48 PNGs (a colour
field with a square: small files, so the corpus writes fast) with a unique id and caption. Then a
fresh Python process (the *driver*) runs :func:`medcl.pretrain.runner.run_pretrain` on it with one
Ray Train worker (a separate process, not local mode), ``medcl-tiny``, ``data.image_size`` and one
epoch by default, so the whole corpus streams through the worker. The driver samples its own RSS
(``psutil``, every 0.1 s, from just before ``run_pretrain`` to its end) and reads ``ru_maxrss``.

Prints JSON: per size the driver's RSS before the run, its peak, the growth, ``ru_maxrss``, the
steps trained, and ``materialised_mb``: what the decoded training images would take in memory
(``rows x image_size^2 x 3`` bytes), the array the previous implementation built on the driver.
``peak_ratio`` compares the largest size's peak RSS to the smallest's (flat: about 1). Memory
is not a timing: the figures hold on a loaded machine (``load_average`` is printed anyway).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DISTINCT = 256
SHARD_ROWS = 5_000


def write_corpus(directory: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from medcl.corpus.schema import CORPUS_SCHEMA

    rng = np.random.default_rng(0)
    images = []
    for _ in range(DISTINCT):
        picture = Image.new("RGB", (48, 48), tuple(int(v) for v in rng.integers(0, 255, 3)))
        x, y = (int(v) for v in rng.integers(0, 32, 2))
        picture.paste(tuple(int(v) for v in rng.integers(0, 255, 3)), (x, y, x + 16, y + 16))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    directory.mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        table = pa.table({"id": [f"bench:{start + i}" for i in range(n)],
                          "image": pa.array([images[(start + i) % DISTINCT] for i in range(n)], pa.binary()),
                          "caption": [f"a synthetic scan, pattern {(start + i) % DISTINCT}" for i in range(n)],
                          "source": ["bench"] * n, "modality": ["ct"] * n, "license": ["CC0-1.0"] * n},
                         schema=CORPUS_SCHEMA)
        pq.write_table(table, directory / f"part-{index:05d}.parquet")


def driver(corpus: Path, output: Path, args) -> dict:
    """Run in the child process: one pretraining, the driver's RSS sampled throughout."""
    import resource
    import threading
    import time

    import psutil

    from medcl.engine.loopback import prepare_local_environment

    prepare_local_environment()
    from medcl.pretrain.config import validate_pretrain
    from medcl.pretrain.runner import run_pretrain

    config = validate_pretrain({
        "name": "stream-memory", "output_dir": str(output),
        "data": {"source": "corpus", "path": str(corpus), "heldout": 64, "image_size": args.image_size},
        "model": {"name": "medcl-tiny"},
        "train": {"workers": 1, "batch_size": args.batch_size, "epochs": args.epochs, "warmup_steps": 0}})
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.1)

    before = process.memory_info().rss
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result = run_pretrain(config)
    done.set()
    thread.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    mb = 1 << 20
    return {"rss_before_mb": round(before / mb, 1), "rss_peak_mb": round(peak[0] / mb, 1),
            "rss_growth_mb": round((peak[0] - before) / mb, 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "steps": result.metrics["steps"], "data": result.metrics["data"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="5000,20000")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--child", nargs=2, metavar=("CORPUS", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(driver(Path(args.child[0]), Path(args.child[1]), args)), flush=True)
        return
    sizes, results = [int(r) for r in args.rows.split(",")], {}
    with tempfile.TemporaryDirectory(prefix="medcl-stream-memory-") as tmp:
        for rows in sizes:
            corpus = Path(tmp) / f"corpus-{rows}"
            write_corpus(corpus, rows)
            command = [sys.executable, __file__, "--child", str(corpus), str(Path(tmp) / f"runs-{rows}"),
                       "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                       "--epochs", str(args.epochs)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"the driver for {rows} rows failed:\n{done.stderr[-4000:]}")
            results[rows] = json.loads(lines[-1][len("RESULT "):])
            results[rows]["materialised_mb"] = round(rows * args.image_size ** 2 * 3 / (1 << 20), 1)
    smallest, largest = results[min(sizes)], results[max(sizes)]
    print(json.dumps({"sizes": results, "peak_ratio": round(largest["rss_peak_mb"] / smallest["rss_peak_mb"], 3),
                      "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
                      "load_average": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
