"""A node removed from a simulated 3-node Ray cluster during a sequence run, in its own process.

    RAY_TMPDIR=/tmp/mcl-x python tests/faults/node_removal_run.py OUT_DIR   # prints one JSON line

``ray.cluster_utils.Cluster`` on 127.0.0.1: a head and two worker nodes, 1 CPU each; the run
(``fault_experiment``, 2 Train workers of 1 CPU, ``train.max_failures: 1``) joins it through
``RAY_ADDRESS``; its 2 workers land on two different nodes (1 CPU each). Both workers stop at step
``REMOVE_AT_STEP`` of task 2 and hold there (``faultkit.held_fault``: each writes where it is, its
pid and its node), so the removal cannot race past that point. The node of a worker that is not
on the head is then removed without grace (its raylet and workers are killed, as a lost machine);
that the worker's process is gone afterwards shows the node really hosted it. The other worker is
then let go (it leaves, as a peer of a lost rank would fail); Ray Train restarts the worker group on
the two nodes left, from ``task-1``. The JSON gives what each worker reported, the removed node,
the removal time and the run's result or error, for test_node_removal.py to check.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from medcl.engine.loopback import prepare_local_environment

prepare_local_environment()  # loopback settings before ray is imported
from faultkit import at_point, fault_experiment, held_fault, process_gone, release, wait_until  # noqa: E402

REMOVE_AT_STEP = 3


def start_cluster():
    from ray.cluster_utils import Cluster

    from medcl.engine.localray import free_port

    # the Train placement-group cleaner asks the state API whether the controller lives: point it
    # at a port of this cluster (no dashboard: nothing answers), never at another Ray's dashboard
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{free_port()}"
    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


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


def remove_a_worker_node(cluster, out: Path, alive) -> dict:
    """Wait for both workers at the fault point, remove the node of one that is not on the head,
    check its worker process died with it, then let the other go. Returns what was seen."""
    import ray

    held = wait_until(lambda: [at_point(out, r) for r in (0, 1)] if all(at_point(out, r) for r in (0, 1)) else None,
                      "both Train workers at the fault point", alive=alive)
    head = cluster.head_node.node_id
    victim = next(w for w in held if w["node_id"] != head)  # 2 workers on 2 nodes: one is not the head
    node = next(n for n in cluster.list_all_nodes() if n.node_id == victim["node_id"])
    alive_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    removed_at = time.time()
    cluster.remove_node(node, allow_graceful=False)
    wait_until(lambda: process_gone(victim["pid"]), f"the end of worker {victim['pid']} on the removed node",
               timeout=120)
    release(out)
    return {"held": held, "head_node": head, "victim_rank": victim["rank"], "removed_node": node.node_id,
            "removed_node_was_alive": node.node_id in alive_nodes, "victim_pid_gone": process_gone(victim["pid"]),
            "removed_at": removed_at}


def main(out: str) -> None:
    import ray

    from medcl.config import validate_experiment
    from medcl.engine.runner import run_experiment

    out_dir = Path(out)
    cluster = start_cluster()
    os.environ["RAY_ADDRESS"] = cluster.address
    os.environ.update(held_fault(out_dir, f"step={REMOVE_AT_STEP},stage=2"))
    config = validate_experiment(fault_experiment(out, "node-removal", workers=2, max_failures=1))
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = run_experiment(config)
        except Exception as exc:  # reported in the JSON, checked by the test
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        try:
            seen = remove_a_worker_node(cluster, out_dir, alive=thread.is_alive)
        except AssertionError as exc:
            seen = {"removal_error": str(exc)}
        finally:
            release(out_dir)
        thread.join(timeout=900)
        result = outcome.get("result")
        summary = {**seen, "error": outcome.get("error"), "run_dir": str(config.run_dir.resolve()),
                   "finished": not thread.is_alive(), "stages_done": result.state.stages_done if result else None,
                   **recovery(config.run_dir, seen.get("removed_at"))}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
