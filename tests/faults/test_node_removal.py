"""A node removed from a multi-node local cluster during a run: the run completes, nothing else is lost.

This is also the multi-node test of the engine: the run's two Train workers are on two different
nodes of the simulated cluster when one of them is removed.

The cluster lives in a subprocess (``node_removal_run.py``, its own ``RAY_TMPDIR`` so no other
``ray.init()`` can find it); processes left behind are killed by PID (``LocalRayCluster.stop``
kills only processes naming that temp dir). Both workers hold at step 3 of task 2 until the node is
removed, so the removal always interrupts task 2 at that step, whatever the machine's speed. What is
lost: the task-2 steps done on the removed node's worker group; task 1 is not trained again, and the
restarted task 2 replays the interrupted steps exactly (same loss per step).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from faultkit import STEPS, assert_replayed, attempts, read_events
from local_ray_cluster import LocalRayCluster
from node_removal_run import REMOVE_AT_STEP

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SCRIPT = Path(__file__).with_name("node_removal_run.py")


@pytest.fixture(scope="module")
def node_removed(tmp_path_factory):
    out = tmp_path_factory.mktemp("node-removal")
    temp_dir = tempfile.mkdtemp(prefix="mcl-", dir="/tmp")  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") and not k.startswith("MEDCL_FAULT")}
    env.update(RAY_TMPDIR=temp_dir, RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1")
    try:
        proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, capture_output=True, text=True,
                              timeout=1200)
    finally:
        leftovers = LocalRayCluster.__new__(LocalRayCluster)
        leftovers.temp_dir = temp_dir
        leftovers.stop(grace=5)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_removed_node_hosted_a_train_worker_held_at_the_fault_point(node_removed):
    assert "removal_error" not in node_removed, node_removed.get("removal_error")
    held = node_removed["held"]
    assert [(w["rank"], w["stage"], w["step"]) for w in held] == [(0, 2, REMOVE_AT_STEP), (1, 2, REMOVE_AT_STEP)]
    assert len({w["node_id"] for w in held}) == 2, "the 2 Train workers should run on 2 nodes"
    victim = held[node_removed["victim_rank"]]
    assert node_removed["removed_node"] == victim["node_id"] != node_removed["head_node"]
    assert node_removed["removed_node_was_alive"] and node_removed["victim_pid_gone"]


def test_the_run_completes_after_losing_a_node(node_removed):
    assert node_removed["error"] is None and node_removed["finished"] and node_removed["stages_done"] == 2


def test_only_the_interrupted_task_is_trained_again(node_removed):
    events = read_events(Path(node_removed["run_dir"]))
    starts = [e for e in events if e["kind"] == "stage_start"]
    assert [e["stage"] for e in starts] == [1, 2, 2]
    assert starts[-1]["time"] > node_removed["removed_at"]
    assert [e["step"] for e in events if e["kind"] == "step" and e["task"] == "xray"] == list(range(1, STEPS + 1))
    # rank 0 holds at step 3 before logging it: the interrupted attempt logged steps 1-2, no more
    assert [e["step"] for e in attempts(events, stage=2)[0]] == list(range(1, REMOVE_AT_STEP))
    assert assert_replayed(events, stage=2) == REMOVE_AT_STEP - 1
    assert [e["step"] for e in attempts(events, stage=2)[1]] == list(range(1, STEPS + 1))
    assert [e["after"] for e in events if e["kind"] == "row"] == ["zero_shot", "xray", "ultrasound"]
