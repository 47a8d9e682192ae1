"""The shipped real-data sequence (``experiments/medical.yaml``) as ``docs/benchmarks.md`` shows it:
runs it with ``medcl run`` and writes the accuracy matrix, metrics, majority-class rates and wall
time as a ``matrix`` result for ``render_tables.py`` (never typed by hand).

    .venv/bin/python experiments/benchmarks/medical_sequence.py                      # prints the JSON
    .venv/bin/python experiments/benchmarks/medical_sequence.py --write docs/results/medical_sequence.json

Needs the real MedMNIST / MedNIST files of ``../shared/data`` (exits with the reason when absent).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "medical.yaml"
SHARED_DATA = REPO.parent / "shared" / "data"


def run_sequence(out: Path) -> tuple[Path, float]:
    """``medcl run`` of the shipped file into ``out``; its run directory and wall seconds."""
    started = time.perf_counter()
    subprocess.run([str(REPO / ".venv" / "bin" / "medcl"), "run", str(EXPERIMENT), "--output-dir", str(out),
                    "--fresh", "--no-dashboard"], cwd=REPO, check=True)
    runs = [p for p in out.iterdir() if (p / "metrics.json").is_file()]
    if len(runs) != 1:
        raise SystemExit(f"medical_sequence: expected one run under {out}, found {runs}")
    return runs[0], time.perf_counter() - started


def matrix_result(run_dir: Path, wall_s: float) -> dict:
    """The ``matrix`` result of a finished run directory (``render_tables.py`` kinds)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    lines = (run_dir / "matrix.csv").read_text().strip().splitlines()
    tasks = lines[0].split(",")[1:]
    rows = []
    for line in lines[1:]:
        label, *values = line.split(",")
        label = "before training" if label in ("zero_shot", "before training") else f"after {label}"
        rows.append({"label": label, "values": [round(float(v), 1) for v in values]})
    majority = metrics.get("majority_class_rate") or {}
    per_task = metrics.get("wall_time_s_per_task") or []
    load = os.getloadavg()[0]
    return {
        "kind": "matrix", "benchmark": "experiments/benchmarks/medical_sequence.py",
        "measured": [f"`.venv/bin/python experiments/benchmarks/medical_sequence.py --write "
                     f"docs/results/medical_sequence.json` ({time.strftime('%Y-%m-%d')}, load average {load:.1f} "
                     f"at the end): {wall_s:.0f} s wall in all (train + evaluation per task "
                     + ", ".join(f"{s:.0f} s" for s in per_task) + "), accuracy (%):"],
        "tasks": tasks, "rows": rows,
        "metrics": {k: round(metrics[k], 1) for k in ("transfer", "avg", "last", "bwt", "forgetting", "fwt")
                    if metrics.get(k) is not None},
        "after": ["Majority-class rate of each test split (%): "
                  + ", ".join(f"{t} {r:.1f}" for t, r in majority.items())
                  + "; an accuracy at or below it has learnt nothing about the task."] if majority else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="also write the JSON here (docs/results/medical_sequence.json)")
    args = parser.parse_args(argv)
    if not SHARED_DATA.is_dir():
        sys.exit(f"medical_sequence: {SHARED_DATA} is absent (real MedMNIST/MedNIST files)")
    with tempfile.TemporaryDirectory(prefix="medical-sequence-") as tmp:
        run_dir, wall_s = run_sequence(Path(tmp))
        result = matrix_result(run_dir, wall_s)
    text = json.dumps(result, indent=1)
    if args.write:
        args.write.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
