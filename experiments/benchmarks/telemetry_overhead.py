"""Cost of medcl's Ray metrics on training step time: telemetry on vs off.

    .venv/bin/python experiments/benchmarks/telemetry_overhead.py [--steps 200] [--log-every 1] [--repeats 1]

Two measurements, both in one local Ray (loopback, no dashboard):

* engine: the same 1-task synthmed run (medcl-tiny, 1 Ray Train worker, batch 64) with
  ``telemetry: true`` and ``telemetry: false``, alternated ``--repeats`` times; per-step time is
  taken in the steady state from ``events.jsonl`` (first to last logged step). ``--log-every 1``
  records metrics at every step, the worst case (the default config records ~50 times per task).
* record: the cost of one ``ProgressLog.step`` at a logging point (event line + metrics) with
  telemetry on and off, in this process, averaged over many calls.

Prints JSON; the figure that matters is ``engine_step_ratio`` (on / off; target <= 1.02).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medcl.config import validate_experiment
from medcl.engine.progress import ProgressLog
from medcl.engine.runner import run_experiment
from medcl.rundir import RunDir, read_events


def experiment(out: str, name: str, steps: int, log_every: int, telemetry: bool):
    return validate_experiment({
        "name": name, "seed": 0, "output_dir": out, "telemetry": telemetry,
        "benchmark": {"name": "synthmed", "num_tasks": 1},
        "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
        "train": {"workers": 1, "batch_size": 64, "lr": 2e-3, "steps_per_task": steps, "log_every": log_every},
    })


def engine_step_s(out: str, name: str, steps: int, log_every: int, telemetry: bool) -> float:
    config = experiment(out, name, steps, log_every, telemetry)
    run_experiment(config, fresh=True)
    events = [e for e in read_events(Path(out) / name / "events.jsonl") if e["kind"] == "step"]
    first = events[len(events) // 10]  # skip the first 10 % (warm-up)
    return (events[-1]["time"] - first["time"]) / (events[-1]["step"] - first["step"])


def record_cost_s(out: str, telemetry: bool, calls: int = 2000) -> float:
    """Seconds per ProgressLog.step at a logging point (log_every=1)."""
    run = RunDir(Path(out) / f"record-{telemetry}")
    run.path.mkdir(parents=True, exist_ok=True)
    log = ProgressLog(run, enabled=True, log_every=10**9, telemetry=telemetry)  # events, no terminal lines
    log.start_stage("xray", 0, 1, 10**9)
    log.event_every = 1
    terms = {"loss": torch.tensor(1.0), "ce": torch.tensor(0.9), "reg": torch.tensor(0.1)}
    started = time.perf_counter()
    for step in range(1, calls + 1):
        log.step(step, terms, 64)
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as out:
            record = {flag: record_cost_s(out, flag) for flag in (False, True)}
            engine = {True: [], False: []}
            for repeat in range(args.repeats):
                for flag in (True, False) if repeat % 2 == 0 else (False, True):
                    engine[flag].append(engine_step_s(out, f"tel-{flag}-{repeat}", args.steps, args.log_every, flag))
    finally:
        ray.shutdown()
    on, off = statistics.median(engine[True]), statistics.median(engine[False])
    print(json.dumps({
        "benchmark": "telemetry_overhead", "steps": args.steps, "log_every": args.log_every,
        "repeats": args.repeats, "workers": 1, "batch_size": 64,
        "engine_step_ms_on": round(1000 * on, 2), "engine_step_ms_off": round(1000 * off, 2),
        "engine_step_ratio": round(on / off, 3),
        "engine_step_ms_on_all": [round(1000 * v, 2) for v in engine[True]],
        "engine_step_ms_off_all": [round(1000 * v, 2) for v in engine[False]],
        "record_us_on": round(1e6 * record[True], 1), "record_us_off": round(1e6 * record[False], 1),
        "record_us_telemetry": round(1e6 * (record[True] - record[False]), 1),
        "target_ratio": 1.02,
    }, indent=2))


if __name__ == "__main__":
    main()
