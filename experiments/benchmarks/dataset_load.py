"""Load time of each shared real data set through its adapter: cold (decode) and warm (per-process cache).

    .venv/bin/python experiments/benchmarks/dataset_load.py [--data-root ../shared/data] [--repeats 3]

Prints JSON: per data set, images loaded, cold seconds (decode cache cleared; median of
``--repeats``), warm seconds (same build again in the same process) and cold images per second.
"MedNIST as Parquet" writes the 1,800 MedNIST JPEG files into a temporary manifest of image bytes
and reads it back through the ``parquet`` adapter (record batches of 512 rows).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _time(build, repeats: int) -> dict:
    from medcl.data.images import DECODE_CACHE

    cold = []
    for _ in range(repeats):
        DECODE_CACHE.clear()
        started = time.perf_counter()
        tasks = build()
        cold.append(time.perf_counter() - started)
    started = time.perf_counter()
    build()
    warm = time.perf_counter() - started
    images = sum(len(t.split(s)) for t in tasks for s in t.splits)
    cold_s = statistics.median(cold)
    return {"images": images, "cold_s": round(cold_s, 3), "warm_s": round(warm, 4),
            "cold_images_per_s": round(images / cold_s), "shape": list(tasks[0].split("train").images.shape[1:])}


def _mednist_manifest(folder: Path, out: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*/*.jpeg"))
    table = pa.table({"image": [f.read_bytes() for f in files], "label": [f.parent.name for f in files]})
    pq.write_table(table, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.data_root)
    if not root.is_dir():
        sys.exit(f"no data at {root}; pass --data-root")
    from medcl.data import BENCHMARKS

    def build(name, **options):
        return lambda: BENCHMARKS.get(name)().build(options, seed=0)

    mednist = str(root / "mednist" / "MedNIST")
    cases = {
        "PneumoniaMNIST (npz, 28 px)": build("medmnist", root=str(root / "medmnist"), datasets=["pneumoniamnist"]),
        "PneumoniaMNIST (npz, resized to 32 px)": build("medmnist", root=str(root / "medmnist"),
                                                        datasets=["pneumoniamnist"], image_size=32),
        "BreastMNIST (npz, 28 px)": build("medmnist", root=str(root / "medmnist"), datasets=["breastmnist"]),
        "MedNIST (JPEG folders, 64 px)": build("imagefolder", tasks=[{"root": mednist, "dataset": "mednist"}]),
        "MedNIST (JPEG folders, resized to 32 px)": build("imagefolder", image_size=32,
                                                          tasks=[{"root": mednist, "dataset": "mednist"}]),
    }
    results = {name: _time(fn, args.repeats) for name, fn in cases.items()}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _mednist_manifest(Path(mednist), Path(tmp) / "mednist.parquet")
        results["MedNIST as Parquet (image bytes, 64 px)"] = _time(
            build("parquet", tasks=[{"path": str(manifest), "dataset": "mednist"}]), args.repeats)
    print(json.dumps({"benchmark": "dataset_load", "data_root": str(root), "repeats": args.repeats,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
