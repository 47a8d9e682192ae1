"""Wall time of the quickstart (`medcl run experiments/quickstart.yaml --fresh`), as a user sees it.

    .venv/bin/python experiments/benchmarks/quickstart_time.py [--no-dashboard]

Prints JSON: total wall seconds of the command, Ray start-up to first training step, training
and evaluation time per task (from the run's events), and the final metrics. Target: < 180 s on
a 2-core machine after install.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-dashboard", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = [str(Path(sys.executable).parent / "medcl"), "run", str(REPO / "experiments" / "quickstart.yaml"),
                   "--fresh", "--output-dir", out] + (["--no-dashboard"] if args.no_dashboard else [])
        started = time.time()
        proc = subprocess.run(command, capture_output=True, text=True)
        wall = time.time() - started
        if proc.returncode:
            sys.exit(f"quickstart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        run = Path(out) / "quickstart"
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        metrics = json.loads((run / "metrics.json").read_text())
    first_step = min(e["time"] for e in events if e["kind"] == "stage_start")
    print(json.dumps({
        "benchmark": "quickstart_time",
        "wall_s": round(wall, 1),
        "start_to_first_stage_s": round(first_step - started, 1),
        "wall_time_s_per_task": [round(t, 1) for t in metrics["wall_time_s_per_task"]],
        "dashboard": not args.no_dashboard,
        "metrics": {k: metrics[k] for k in ("transfer", "avg", "last", "bwt", "forgetting", "fwt")},
        "target_s": 180,
    }, indent=2))


if __name__ == "__main__":
    main()
