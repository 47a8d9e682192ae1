"""A node removed from a simulated 3-node Ray cluster during a sequence run, in its own process.

    RAY_TMPDIR=/tmp/mcl-x python tests/faults/node_removal_run.py OUT_DIR   # prints one JSON line

``ray.cluster_utils.Cluster`` on 127.0.0.1: a head and two worker nodes, 1 CPU each; the run
(``fault_experiment``, 2 Train workers of 1 CPU, ``train.max_failures: 1``) joins it through
``RAY_ADDRESS``; its 2 workers land on two different nodes (1 CPU each). Once task 2 has logged ``REMOVE_AT_STEP`` steps, the non-head node of one Train
worker is removed without grace (its raylet and workers are killed, as a lost machine); Ray
Train restarts the worker group on the two nodes left, from ``task-1``. The JSON gives the
removed node, the removal time, the run's result or error, for test_node_removal.py to check.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import medcl  # noqa: F401  (loopback settings before ray is imported)
from faultkit import fault_experiment

REMOVE_AT_STEP = 3


def start_cluster():
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


def worker_node_ids() -> list[str]:
    import ray

    return [a["Address"]["NodeID"] for a in ray._private.state.actors().values()
            if "TrainWorker" in a["ActorClassName"] and a["State"] == "ALIVE"]


def task2_steps(run_dir: Path) -> int:
    path = run_dir / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum('"kind": "step"' in line and '"ultrasound"' in line for line in lines)


def recovery(run_dir: Path, removed_at: float | None) -> dict:
    """Steps of task 2 lost, and seconds from the removal to the restarted task 2 (start, first step)."""
    path = run_dir / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if removed_at is None:
        return {}
    before = [e for e in events if e["kind"] == "step" and e["task"] == "ultrasound" and e["time"] <= removed_at]
    restart = next((e for e in events if e["kind"] == "stage_start" and e["time"] > removed_at), None)
    step = next((e for e in events if e["kind"] == "step" and e["time"] > removed_at), None)
    return {"lost_steps": len(before), "recovery_s_to_restarted_stage": restart and restart["time"] - removed_at,
            "recovery_s_to_first_step": step and step["time"] - removed_at}


def main(out: str) -> None:
    import os

    import ray

    from medcl.config import validate_experiment
    from medcl.engine.runner import run_experiment

    cluster = start_cluster()
    os.environ["RAY_ADDRESS"] = cluster.address
    config = validate_experiment(fault_experiment(out, "node-removal", workers=2, max_failures=1))
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = run_experiment(config)
        except Exception as exc:  # reported in the JSON, checked by the test
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    removed, removed_at = None, None
    try:
        while thread.is_alive() and task2_steps(config.run_dir) < REMOVE_AT_STEP:
            time.sleep(0.1)
        head, workers = cluster.head_node.node_id, worker_node_ids()
        victims = [n for n in cluster.list_all_nodes() if n.node_id in workers and n.node_id != head]
        if thread.is_alive() and victims:
            removed, removed_at = victims[0].node_id, time.time()
            cluster.remove_node(victims[0], allow_graceful=False)
        thread.join(timeout=900)
        result = outcome.get("result")
        summary = {"removed_node": removed, "removed_at": removed_at, "error": outcome.get("error"),
                   "train_worker_nodes": workers,
                   "run_dir": str(config.run_dir.resolve()), "finished": not thread.is_alive(),
                   "stages_done": result.state.stages_done if result else None, **recovery(config.run_dir, removed_at)}
        (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
