"""Sweeps whose trials train on Ray Train workers, against trials that train in process (issue #16).

    .venv/bin/python experiments/benchmarks/sweep_workers.py [--num-samples 6] [--steps 10]
                                                             [--modes 1,0] [--set field=value ...]

Runs the tiny sweep (``experiments/sweeps/tiny_synthmed.yaml``, ASHA on) once per mode, one trial
at a time, in one local Ray: ``train_workers: 1`` (a TorchTrainer with one worker per trial:
1 CPU for the trial, 1 for its worker) and ``train_workers: 0`` (Ray Train local mode in the trial
process, 1 CPU). Both draw the same configurations (random start-up for every trial, same seed).
Prints JSON per mode: trial states, sweep wall time, and per pair of consecutive trials the time
from the earlier trial's last evaluated task (its last ``row`` event) to the next trial's zero-shot
row and to its first training step (``events.jsonl`` times), plus the load average before and
after. The sweeps' own lines go to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from medcl.engine.cluster import connect
from medcl.sweep import load_sweep
from medcl.sweep.driver import run_sweep


def trial_times(run_dir: Path) -> dict:
    """First zero-shot row, first step and last row times of one trial's ``events.jsonl``."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    rows = [e["time"] for e in events if e["kind"] == "row"]
    steps = [e["time"] for e in events if e["kind"] == "step"]
    return {"zero_shot": rows[0] if rows else None, "first_step": steps[0] if steps else None,
            "last_row": rows[-1] if rows else None}


def one_sweep(args, workers: int, out: Path) -> dict:
    overrides = [f"num_samples={args.num_samples}", f"experiment.train.steps_per_task={args.steps}",
                 f"resources.train_workers={workers}", "resources.trial_cpus=1", "resources.worker_cpus=1",
                 "max_concurrent_trials=1", f"output_dir={out}", *args.overrides]
    config = load_sweep(args.sweep, overrides)
    config.searcher.n_startup_trials = config.num_samples
    load_before = os.getloadavg()[0]
    result = run_sweep(config, fresh=True)
    trials = result.study.get_trials()
    times = [trial_times(out / config.name / "trials" / f"trial-{t.number:04d}") for t in trials]
    to_step = [b["first_step"] - a["last_row"] for a, b in zip(times, times[1:]) if a["last_row"] and b["first_step"]]
    to_zero = [b["zero_shot"] - a["last_row"] for a, b in zip(times, times[1:]) if a["last_row"] and b["zero_shot"]]
    states = [t.state.name for t in trials]
    return {"train_workers": workers, "trials": len(trials), "states": states,
            "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "tasks_trained": sum(int(t.user_attrs.get("tasks_trained", 0)) for t in trials),
            "wall_s": round(result.wall_time_s, 1),
            "end_to_next_first_step_s": _summary(to_step), "end_to_next_zero_shot_s": _summary(to_zero),
            "load_avg_1min_before": round(load_before, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2),
            "params": [t.params for t in trials]}


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "each": [round(v, 1) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default="experiments/sweeps/tiny_synthmed.yaml")
    parser.add_argument("--num-samples", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", default="1,0", help="train_workers values to run, in order")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    connect(None, dashboard=False)
    runs = []
    with tempfile.TemporaryDirectory(prefix="medcl-sweep-workers-") as out, contextlib.redirect_stdout(sys.stderr):
        for workers in (int(m) for m in args.modes.split(",")):
            runs.append(one_sweep(args, workers, Path(out) / f"workers{workers}"))
    params = [r.pop("params") for r in runs]
    print(json.dumps({"sweep": args.sweep, "num_samples": args.num_samples, "steps_per_task": args.steps,
                      "cpus": os.cpu_count(), "same_configurations": all(p == params[0] for p in params),
                      "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
