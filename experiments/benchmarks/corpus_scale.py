"""The corpus pipeline at growing sizes: rows/s per stage and the driver's peak memory (JSON).

    .venv/bin/python experiments/benchmarks/corpus_scale.py [--rows 50000 200000 1000000]
        [--model medcl-tiny] [--actors 2] [--batch-size 256] [--shard-rows 50000] [--factory auto]
        [--train-sample N] [--space both|text|image]

Per size N, a synthetic source is written first (not timed): Parquet files of 10,000 rows
(``key``, ``png``: one of 512 distinct 32x32 synthmed PNGs, ``txt``: its caption), every key
unique. Then the three stages run as the CLI runs them, each in its own process (the *driver*)
joined to one local Ray started by this script (``RAY_ADDRESS``)::

    medcl corpus build SPEC --out corpus        (Ray Data: read, validate/decode, de-duplicate, write)
    medcl corpus embed corpus --out emb --model M --actors A --batch-size B --shard-rows S
    medcl index build emb --out index [--factory F] [--train-sample T] [--space X]

Reported per stage: wall seconds and rows/s (from the process start, so Python/torch imports
and the connection to Ray are included), and the driver's peak resident memory (``VmHWM`` of that process, which
reads it itself at exit: Ray's workers are separate processes, so it is the driver alone),
plus the load average after the stage. Per size: index bytes per vector (each space's shard files,
codes + labels or whole ``.faiss`` files, / its vectors; the trained index, stored once per space,
and the id mapping apart). At the end, ``driver_peak_ratio``: each stage's peak
memory at the largest size / at the smallest (goal: flat, <= 1.2).

On a machine shared with other jobs, rows/s are indicative only (``load_average`` says how busy
it was); peak memory does not depend on load.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medcl.engine.loopback import prepare_local_environment  # noqa: E402

prepare_local_environment()  # before ray is imported: keeps the local Ray on loopback

DISTINCT, FILE_ROWS = 512, 10_000


def write_source(directory: Path, rows: int) -> None:
    """``rows`` unique keys over 512 distinct PNGs + captions, in Parquet files of FILE_ROWS rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medcl.corpus.sources.synthmed import png_bytes
    from medcl.data import BENCHMARKS
    from medcl.data.synthmed import captioned_pairs

    tasks = BENCHMARKS.get("synthmed")().build({"num_tasks": 6, "train_per_class": 18}, seed=0)
    pairs = list(captioned_pairs(tasks))[:DISTINCT]
    images, captions = [png_bytes(p["image"]) for p in pairs], [p["caption"] for p in pairs]
    directory.mkdir(parents=True)
    for number, start in enumerate(range(0, rows, FILE_ROWS)):
        picks = [(start + i) % len(pairs) for i in range(min(FILE_ROWS, rows - start))]
        table = pa.table({"key": [f"k{start + i}" for i in range(len(picks))],
                          "png": pa.array([images[p] for p in picks], pa.binary()),
                          "txt": [f"{captions[p]} ({start + i})" for i, p in enumerate(picks)]})
        pq.write_table(table, directory / f"part-{number:05d}.parquet")


def write_spec(root: Path) -> Path:
    import yaml

    spec = {"data_root": str(root), "shard_rows": FILE_ROWS, "sources": [
        {"type": "parquet", "path": "source", "name": "bench", "id_column": "key", "image_column": "png",
         "caption_column": "txt"}]}
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# The driver's own peak is VmHWM of its address space, read by the driver itself at exit (the
# wrapper below). Not ``ru_maxrss`` from ``wait4``: Linux carries the parent's peak into a child's
# maxrss across fork/vfork + exec, so that figure is max(this script's peak, the driver's): a floor
# that hid small drivers behind this script's own memory (earlier tables in docs/corpus.md).
PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _write_peak():
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["MEDCL_BENCH_PEAK_FILE"], "w") as out:
        out.write(str(kib))
atexit.register(_write_peak)
sys.argv = ["medcl", *sys.argv[1:]]
runpy.run_module("medcl.cli", run_name="__main__")
"""


def run_stage(args: list[str], rows: int) -> dict:
    """Run one CLI command as its own process; its wall time, rows/s and peak RSS (MiB, its VmHWM).

    The process runs with ``PYTHONSAFEPATH=1``, as the installed ``medcl`` script runs: ``python -c``
    would otherwise put the working directory first on ``sys.path``."""
    with tempfile.NamedTemporaryFile(prefix="medcl-peak-", delete=False) as handle:
        peak_file = handle.name
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", PEAK_WRAPPER, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, PYTHONSAFEPATH="1", MEDCL_BENCH_PEAK_FILE=peak_file))
    output = process.stdout.read()
    code = process.wait()
    seconds = time.perf_counter() - started
    peak_kib = Path(peak_file).read_text().strip()
    os.unlink(peak_file)
    if code != 0:
        raise RuntimeError(f"medcl {' '.join(args)} failed:\n{output[-4000:]}")
    if not peak_kib:
        raise RuntimeError(f"medcl {' '.join(args)} exited without reporting its peak memory")
    return {"seconds": round(seconds, 1), "rows_per_s": round(rows / seconds, 1),
            "driver_peak_mib": round(int(peak_kib) / 1024, 1),
            "load_average": [round(x, 1) for x in os.getloadavg()]}


def index_bytes(index_dir: Path) -> dict:
    """Per space: vectors, bytes of the shard files per vector, the trained index's bytes (once per
    space), bytes of the id mapping per vector. Read from the version ``index_dir/CURRENT`` names
    (:func:`medcl.publish.resolve`), as every reader of an index does."""
    from medcl.corpus.index import read_index_manifest
    from medcl.publish import resolve

    index_dir = Path(resolve(index_dir))  # OUT/v-... (itself for an unversioned index)
    manifest = read_index_manifest(index_dir)
    out = {}
    for space in ("text", "image"):
        entries = [s for s in manifest.entries(space) if s["rows"]]
        vectors = sum(s["rows"] for s in entries)
        if not vectors:
            continue
        shard_bytes = sum((index_dir / s[key]).stat().st_size for s in entries
                          for key in ("codes", "labels", "index") if s.get(key))
        trained = manifest.trained.get(space)
        id_bytes = sum(p.stat().st_size for p in (index_dir / f"{space}-ids").glob("*.parquet"))
        out[space] = {"vectors": vectors, "factory": entries[0]["factory"], "params": entries[0]["params"],
                      "index_bytes_per_vector": round(shard_bytes / vectors, 1),
                      "trained_index_bytes": (index_dir / trained["file"]).stat().st_size if trained else 0,
                      "id_mapping_bytes_per_vector": round(id_bytes / vectors, 1)}
    return out


def one_size(rows: int, root: Path, args) -> dict:
    write_source(root / "source", rows)
    spec = write_spec(root)
    corpus, emb, index = root / "corpus", root / "emb", root / "index"
    result = {"rows": rows, "stages": {}}
    result["stages"]["build"] = run_stage(["corpus", "build", str(spec), "--out", str(corpus)], rows)
    result["stages"]["embed"] = run_stage(
        ["corpus", "embed", str(corpus), "--out", str(emb), "--model", args.model, "--actors", str(args.actors),
         "--batch-size", str(args.batch_size), "--shard-rows", str(args.shard_rows)], rows)
    index_args = ["index", "build", str(emb), "--out", str(index), "--factory", args.factory, "--space", args.space]
    if args.train_sample:
        index_args += ["--train-sample", str(args.train_sample)]
    result["stages"]["index"] = run_stage(index_args, rows)
    result["index"] = index_bytes(index)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--model", default="medcl-tiny")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-rows", type=int, default=50_000, help="rows per embedding shard")
    parser.add_argument("--factory", default="auto")
    parser.add_argument("--train-sample", type=int, default=None, help="index build --train-sample (default: its own)")
    parser.add_argument("--space", default="both", choices=["text", "image", "both"])
    args = parser.parse_args()

    import ray

    context = ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
                       logging_level=logging.WARNING)
    os.environ["RAY_ADDRESS"] = context.address_info["gcs_address"]
    sizes = []
    try:
        for rows in args.rows:
            with tempfile.TemporaryDirectory(prefix=f"medcl-corpus-scale-{rows}-") as tmp:
                sizes.append(one_size(rows, Path(tmp), args))
                print(json.dumps(sizes[-1]), file=sys.stderr, flush=True)  # progress, in case a later size fails
    finally:
        ray.shutdown()
    first, last = sizes[0]["stages"], sizes[-1]["stages"]
    ratio = {stage: round(last[stage]["driver_peak_mib"] / first[stage]["driver_peak_mib"], 3) for stage in first}
    print(json.dumps({"cpus": os.cpu_count(), "model": args.model, "actors": args.actors,
                      "batch_size": args.batch_size, "factory": args.factory, "train_sample": args.train_sample,
                      "sizes": sizes, "driver_peak_ratio": {"from": sizes[0]["rows"], "to": sizes[-1]["rows"],
                                                            **ratio}, "goal_ratio": 1.2}, indent=2))


if __name__ == "__main__":
    main()
