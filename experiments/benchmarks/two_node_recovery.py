"""Job submission to first step, and recovery after a worker dies, on the two-node test cluster with S3.

    python experiments/benchmarks/two_node_recovery.py

Starts what ``tests/integration/test_two_node.py`` starts (head 127.0.0.2 and worker node 127.0.0.3,
one CPU each, private node-local directories, ``moto_server`` as S3), submits the test's 2-worker
run with ``--output-dir s3://...`` and a fault that kills rank 1 at step 2 of task 2 (once), and
reads the run's events back from S3. Prints one JSON object:

* ``submit_to_first_step_s``: ``ray job submit`` returned -> rank 0's first step event;
* ``recovery_s``: last step event before the death -> first step event of the restarted task 2
  (failure detection, new worker group, restore from task 1's checkpoint in S3);
* ``job_s``: submit -> SUCCEEDED; ``steps_lost``: task-2 steps done before the death;
* the 1-minute load average before and after (measure on a quiet machine: load < 1).

Then, on the same cluster, a whole node is lost (``node_kill``): both workers hold at step 2 of task 2,
every process of the worker node is SIGKILLed, a new node joins at 127.0.0.3 (an autoscaler's
replacement) and the run goes on: ``replacement_join_s`` (kill -> new node alive), ``recovery_s``
(kill -> first step event of the restarted task 2), ``steps_lost``.

The restarted task 2 is checked to replay the interrupted one exactly (``faultkit.assert_replayed``).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
for folder in ("tests", "tests/integration", "tests/faults"):
    sys.path.insert(0, str(REPO / folder))

BUCKET = "medcl-recovery"


def _runtime_env(folder: Path, fault_marker: Path) -> Path:
    spec = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    spec["env_vars"].update(MEDCL_FAULT="step=2,stage=2,rank=1", MEDCL_FAULT_ONCE=str(fault_marker))
    path = folder / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _events(run) -> list[dict]:
    from medcl import storage

    text = storage.read_text(run / "events.jsonl") if storage.is_file(run / "events.jsonl") else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def measure(folder: Path) -> dict:
    from faultkit import assert_replayed, attempts
    from s3server import MotoS3, apply_env
    from test_two_node import EXPERIMENT
    from two_node_cluster import TwoNodeCluster

    from medcl import storage

    experiment = {**EXPERIMENT, "train": {**EXPERIMENT["train"], "steps_per_task": 8}}
    (folder / "job").mkdir()
    (folder / "job" / "tiny.yaml").write_text(yaml.safe_dump(experiment))
    with MotoS3() as s3:
        apply_env(s3.env)
        s3.create_bucket(BUCKET)
        with TwoNodeCluster(env={**s3.env, "MEDCL_TELEMETRY": "0"}) as cluster:
            submitted = time.time()
            cluster.submit("recovery", ["medcl", "run", "tiny.yaml", "--output-dir", f"s3://{BUCKET}/runs"],
                           working_dir=folder / "job", runtime_env=_runtime_env(folder, folder / "fired"))
            submit_returned = time.time()
            status = cluster.wait("recovery", timeout=900)
            finished = time.time()
            logs = cluster.logs("recovery")
            if status != "SUCCEEDED":
                raise SystemExit(f"job {status}:\n{logs[-4000:]}")
            node_kill = measure_node_kill(cluster, folder)
        events = _events(storage.place(f"s3://{BUCKET}/runs/two-node"))
    steps = [e for e in events if e["kind"] == "step"]
    interrupted, restarted = attempts(events, 2)
    return {"submit_to_first_step_s": round(steps[0]["time"] - submit_returned, 2),
            "submit_command_s": round(submit_returned - submitted, 2),
            "recovery_s": round(restarted[0]["time"] - interrupted[-1]["time"], 2),
            "steps_lost": assert_replayed(events, 2), "job_s": round(finished - submitted, 2), "node_kill": node_kill}


def measure_node_kill(cluster, folder: Path) -> dict:
    """The whole-node loss of the module docstring, on ``cluster``; the run goes to s3://BUCKET/killed."""
    from faultkit import assert_replayed, at_point, attempts, held_fault, release, wait_until
    from two_node_cluster import WORKER_IP

    from medcl import storage

    held_dir = folder / "held"
    held_dir.mkdir()
    spec = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    spec["env_vars"].update(held_fault(held_dir, "step=2,stage=2"))
    (held_dir / "runtime_env.yaml").write_text(yaml.safe_dump(spec))
    cluster.submit("node-kill", ["medcl", "run", "tiny.yaml", "--output-dir", f"s3://{BUCKET}/killed",
                                 "--set", "train.max_failures=2", "--set", "train.log_every=1"],
                   working_dir=folder / "job", runtime_env=held_dir / "runtime_env.yaml")
    wait_until(lambda: all(at_point(held_dir, r) for r in (0, 1)), "both workers at the fault point", timeout=900)
    killed_at = time.time()
    cluster.kill_worker_node()
    cluster.replace_worker_node()
    joined = time.time()
    release(held_dir)
    status = cluster.wait("node-kill", timeout=900)
    if status != "SUCCEEDED":
        raise SystemExit(f"node-kill job {status}:\n{cluster.logs('node-kill')[-4000:]}")
    events = _events(storage.place(f"s3://{BUCKET}/killed/two-node"))
    restarted = attempts(events, 2)[1]
    assert any(n["node_ip"] == WORKER_IP for n in cluster.alive_nodes())
    return {"replacement_join_s": round(joined - killed_at, 2), "recovery_s": round(restarted[0]["time"] - killed_at, 2),
            "steps_lost": assert_replayed(events, 2)}


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="medcl-recovery-") as tmp:
        result = measure(Path(tmp))
    print(json.dumps({**result, "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
