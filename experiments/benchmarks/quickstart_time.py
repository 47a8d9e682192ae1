"""Wall time of the demo as a user sees it: `medcl pretrain experiments/pretrain_synthmed.yaml --fresh`
then `medcl run experiments/quickstart.yaml --fresh` starting from its weights.

    .venv/bin/python experiments/benchmarks/quickstart_time.py [--no-dashboard] [--random-init]

Prints JSON: wall seconds of each command and of both, the pretraining's own training time and
held-out recall, Ray start-up to the quickstart's first training step, its training and evaluation
time per task (from the run's events), and its metrics. ``--random-init`` skips the pretraining
and runs the quickstart with ``model.pretrained=null`` (the comparison docs/pretraining.md quotes;
the figures of docs/performance.md are kept in docs/results/performance.json).
Target: < 180 s for the quickstart on a 2-core machine after install.
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
MEDCL = str(Path(sys.executable).parent / "medcl")


def _timed(command: list[str]) -> float:
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        sys.exit(f"{' '.join(command[1:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-dashboard", action="store_true")
    parser.add_argument("--random-init", action="store_true", help="quickstart from random init, no pretraining")
    args = parser.parse_args()
    result: dict = {"benchmark": "quickstart_time", "dashboard": not args.no_dashboard, "random_init": args.random_init}
    with tempfile.TemporaryDirectory() as out:
        weights = "null"
        if not args.random_init:
            pretrain_wall = _timed([MEDCL, "pretrain", str(REPO / "experiments" / "pretrain_synthmed.yaml"),
                                    "--fresh", "--output-dir", out])
            pretrain = json.loads((Path(out) / "pretrain-synthmed" / "metrics.json").read_text())
            weights = pretrain["weights"]
            result["pretrain"] = {"wall_s": round(pretrain_wall, 1),
                                  "train_wall_s": round(pretrain["train_wall_time_s"], 1),
                                  "heldout_before": pretrain["heldout_before"], "heldout_after": pretrain["heldout_after"]}
        started = time.time()
        command = [MEDCL, "run", str(REPO / "experiments" / "quickstart.yaml"), "--fresh", "--output-dir", out,
                   "--set", f"model.pretrained={weights}"] + (["--no-dashboard"] if args.no_dashboard else [])
        quickstart_wall = _timed(command)
        run = Path(out) / "quickstart"
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        metrics = json.loads((run / "metrics.json").read_text())
    first_step = min(e["time"] for e in events if e["kind"] == "stage_start")
    result.update({
        "wall_s": round(quickstart_wall + result.get("pretrain", {}).get("wall_s", 0.0), 1),
        "quickstart_wall_s": round(quickstart_wall, 1),
        "start_to_first_stage_s": round(first_step - started, 1),
        "wall_time_s_per_task": [round(t, 1) for t in metrics["wall_time_s_per_task"]],
        "zero_shot": metrics["zero_shot"],
        "metrics": {k: metrics[k] for k in ("transfer", "avg", "last", "bwt", "forgetting", "fwt")},
        "target_s": 180,
    })
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
