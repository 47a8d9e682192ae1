"""PRIMED's costs against plain fine-tuning: retrieval (planning) time per task, training time per step.

    .venv/bin/python experiments/benchmarks/primed_overhead.py [--steps 60] [--index-dir runs/corpora/synthmed-index]

Runs the same 2-task synthmed sequence (xray, ultrasound; medcl-tiny; batch 64; 1 worker; one
torch thread) with ``finetune``, ``primed`` and ``primed`` without the dynamic Fisher guard
(``dfg: 0``), each through ``run_experiment`` (one Ray, one TorchTrainer per run). Per-step time is
the steady state of each task (first to last logged step, from events.jsonl), averaged over the
tasks; retrieval time per task is plan.json's ``retrieval_s`` (driver side, before training starts;
query embedding, dense search, fetching and embedding candidate images, re-rank, siphon, writing
the Parquet set). Without ``--index-dir`` PRIMED uses its built-in in-memory synthmed corpus.
Prints JSON with the ratios to finetune.

``--online`` adds PRIMED's online mode (``retrieval: online``, rank 0 retrieving every
``--refresh-every`` steps; docs/methods.md#9-primed-on-this-platform) with the current model as
scorer and with the starting model: per-step time against the planned run (the refreshes inside the
timed window included), seconds per refresh, and Transfer / Avg / Last of each mode.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from medcl.config import validate_experiment
from medcl.engine.runner import run_experiment
from medcl.rundir import read_events


def experiment(out: str, name: str, steps: int, strategy: dict):
    return validate_experiment({
        "name": name, "seed": 0, "output_dir": out,
        "benchmark": {"name": "synthmed", "order": ["xray", "ultrasound"], "train_per_class": 60, "test_per_class": 20},
        "model": {"name": "medcl-tiny"}, "strategy": strategy,
        "train": {"workers": 1, "batch_size": 64, "lr": 3e-3, "steps_per_task": steps, "log_every": 10},
    })


def per_step_seconds(run_dir: Path) -> float:
    steps = [e for e in read_events(run_dir / "events.jsonl") if e["kind"] == "step"]
    rates = []
    for task in dict.fromkeys(e["task"] for e in steps):
        mine = [e for e in steps if e["task"] == task]
        rates.append((mine[-1]["time"] - mine[0]["time"]) / (mine[-1]["step"] - mine[0]["step"]))
    return sum(rates) / len(rates)


def measure(out: str, name: str, steps: int, strategy: dict) -> dict:
    started = time.perf_counter()
    result = run_experiment(experiment(out, name, steps, strategy), fresh=True)
    row = {"wall_s": round(time.perf_counter() - started, 1), "per_step_ms": 1000 * per_step_seconds(result.run.path),
           "metrics": {k: round(result.metrics[k], 2) for k in ("transfer", "avg", "last")}}
    if result.metrics.get("primed_refreshes"):
        row["refreshes"] = result.metrics["primed_refreshes"]
        row["s_per_refresh"] = round(result.metrics["primed_refresh_s"] / result.metrics["primed_refreshes"], 4)
    plan = result.run.path / "primed" / "plan.json"
    if plan.is_file():
        tasks = json.loads(plan.read_text())["tasks"]
        row["retrieval_s_per_task"] = [t["retrieval_s"] for t in tasks]
        row["reference_pairs_per_task"] = [t["rows"] for t in tasks]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--index-dir", default=None, help="PRIMED's index (default: the built-in corpus)")
    parser.add_argument("--online", action="store_true", help="also PRIMED's online retrieval (both scorers)")
    parser.add_argument("--refresh-every", type=int, default=20, help="online: steps between retrievals")
    args = parser.parse_args()
    primed = {"name": "primed", **({"index_dir": str(Path(args.index_dir).resolve())} if args.index_dir else {})}
    online = {}
    with tempfile.TemporaryDirectory() as out:
        finetune = measure(out, "finetune", args.steps, {"name": "finetune"})
        full = measure(out, "primed", args.steps, primed)
        no_dfg = measure(out, "primed-nodfg", args.steps, {**primed, "dfg": 0.0})
        for scorer in ("current", "starting") if args.online else ():
            online[scorer] = measure(out, f"primed-online-{scorer}", args.steps,
                                     {**primed, "retrieval": "online", "online_scorer": scorer,
                                      "refresh_every": args.refresh_every})
    finetune_task_s = finetune["per_step_ms"] * args.steps / 1000
    if online:
        online = {"refresh_every": args.refresh_every, "planned_metrics": full["metrics"], **{
            scorer: {**row, "per_step_ms": round(row["per_step_ms"], 2),
                     "per_step_ratio_to_planned": round(row["per_step_ms"] / full["per_step_ms"], 3)}
            for scorer, row in online.items()}}
    print(json.dumps({
        "benchmark": "primed_overhead", "steps_per_task": args.steps, "batch_size": 64, "reference_batch_size": 32,
        "corpus": args.index_dir or "built-in synthmed (in memory)",
        "finetune_per_step_ms": round(finetune["per_step_ms"], 2),
        "primed_per_step_ms": round(full["per_step_ms"], 2),
        "primed_no_dfg_per_step_ms": round(no_dfg["per_step_ms"], 2),
        "per_step_ratio": round(full["per_step_ms"] / finetune["per_step_ms"], 2),
        "per_step_ratio_no_dfg": round(no_dfg["per_step_ms"] / finetune["per_step_ms"], 2),
        "retrieval_s_per_task": full.get("retrieval_s_per_task"),
        "reference_pairs_per_task": full.get("reference_pairs_per_task"),
        "retrieval_to_finetune_task_ratio": [round(s / finetune_task_s, 2) for s in full.get("retrieval_s_per_task", [])],
        "wall_s": {"finetune": finetune["wall_s"], "primed": full["wall_s"], "primed_no_dfg": no_dfg["wall_s"]},
        **({"online": online} if online else {}),
    }, indent=2))


if __name__ == "__main__":
    main()
