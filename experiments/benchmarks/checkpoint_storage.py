"""Persisting one task checkpoint to a local directory vs an S3-compatible store (moto_server on 127.0.0.1).

    python experiments/benchmarks/checkpoint_storage.py [--model medcl-tiny] [--repeats 5]

Writes a real 2-rank checkpoint of ``--model`` (``engine.checkpoint.write_checkpoint``), then times,
per destination, what a run does with it: Ray Train's persist (``pyarrow.fs.copy_files`` into the
``storage_filesystem`` medcl gives it), the driver's resume scan (``latest_checkpoint``) and sha256
verification (``verify_checkpoint``). Prints one JSON object (medians over ``--repeats``, the
checkpoint's size, the 1-minute load average before and after). Measure on a quiet machine
(load < 1): moto is an in-process Python server, so the S3 figures are an upper bound of the
protocol's cost on loopback, not of a cloud bucket.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))


def _checkpoint(directory: Path, model_name: str) -> int:
    import torch

    from medcl.engine.checkpoint import SequenceState, write_checkpoint
    from medcl.models import create_model

    model = create_model(model_name).model
    state = SequenceState(task_names=["a", "b"], stage_names=["a", "b"], zero_shot=[1.0, 2.0], rows=[[3.0, 4.0]])
    for rank in range(2):
        write_checkpoint(directory, rank=rank, state=state, model=model, strategy_state={"r": torch.tensor(rank)})
    return sum(p.stat().st_size for p in directory.iterdir())


def _time(call, repeats: int) -> float:
    times = []
    for index in range(repeats):
        started = time.perf_counter()
        call(index)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _measure(source: Path, root, repeats: int) -> dict:
    from pyarrow import fs

    from medcl import storage
    from medcl.engine.checkpoint import latest_checkpoint, verify_checkpoint

    filesystem, base = storage.resolve(root)

    def persist_once(index: int) -> None:  # what Ray Train does with a reported checkpoint
        target = f"{base}/checkpoints/task-{index + 1}"
        filesystem.create_dir(target, recursive=True)
        fs.copy_files(str(source), target, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)

    persist = _time(persist_once, repeats)
    checkpoints = storage.place(root) / "checkpoints"
    scan = _time(lambda i: latest_checkpoint(checkpoints, ranks=2), repeats)
    verify = _time(lambda i: verify_checkpoint(checkpoints / f"task-{i + 1}"), repeats)
    return {"persist_s": round(persist, 4), "resume_scan_s": round(scan, 4), "verify_s": round(verify, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medcl-tiny")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from s3server import MotoS3, apply_env

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="medcl-ckpt-bench-") as tmp, MotoS3() as s3:
        apply_env(s3.env)
        bucket = s3.create_bucket("medcl-bench")
        size = _checkpoint(Path(tmp, "source"), args.model)
        local = _measure(Path(tmp, "source"), Path(tmp, "local-run"), args.repeats)
        remote = _measure(Path(tmp, "source"), f"{bucket}/run", args.repeats)
    print(json.dumps({"model": args.model, "checkpoint_bytes": size, "repeats": args.repeats, "local": local,
                      "s3_moto_loopback": remote, "load_1min_before": load_before,
                      "load_1min_after": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
