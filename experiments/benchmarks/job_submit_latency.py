"""Job submission to first training step on a local Ray cluster (``ray start --head``, token auth).

    .venv/bin/python experiments/benchmarks/job_submit_latency.py [--repeats 2] [--steps 20]

Starts a cluster on 127.0.0.1 with its own temp dir, ports and token (the helper
``tests/integration/local_ray_cluster.py``), then ``ray job submit --working-dir`` of a tiny
synthmed experiment (1 task, medcl-tiny, 1 worker) ``--repeats`` times, one after the other. For
each job: the time from the submit command to the first ``step`` event in the run's
``events.jsonl`` (job start-up, the driver's imports, Ray Train controller and worker start,
model build, zero-shot evaluation, first logged step), to the stage start, and to SUCCEEDED. The
cluster is stopped by PID at the end. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from local_ray_cluster import LocalRayCluster  # noqa: E402


def experiment(steps: int) -> dict:
    return {"name": "latency", "seed": 0,
            "benchmark": {"name": "synthmed", "num_tasks": 1, "train_per_class": 32, "test_per_class": 10},
            "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
            "train": {"workers": 1, "batch_size": 32, "lr": 2e-3, "steps_per_task": steps, "log_every": 1}}


def one_job(cluster: LocalRayCluster, index: int, work: Path, steps: int) -> dict:
    job_dir = work / f"job-{index}"
    job_dir.mkdir()
    (job_dir / "latency.yaml").write_text(yaml.safe_dump(experiment(steps)))
    out = work / f"runs-{index}"
    submitted = time.time()
    cluster.submit(f"latency-{index}", ["medcl", "run", "latency.yaml", "--output-dir", str(out)],
                   working_dir=job_dir, runtime_env=REPO / "cluster" / "runtime_env.yaml")
    accepted = time.time()
    status = cluster.wait(f"latency-{index}", timeout=900)
    done = time.time()
    if status != "SUCCEEDED":
        raise RuntimeError(f"job {index} {status}:\n{cluster.logs(f'latency-{index}')[-3000:]}")
    events = [json.loads(line) for line in (out / "latency" / "events.jsonl").read_text().splitlines()]
    first_step = next(e["time"] for e in events if e["kind"] == "step")
    stage_start = next(e["time"] for e in events if e["kind"] == "stage_start")
    return {"submit_command_s": accepted - submitted, "submit_to_stage_start_s": stage_start - submitted,
            "submit_to_first_step_s": first_step - submitted, "submit_to_succeeded_s": done - submitted}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as work, LocalRayCluster(num_cpus=2) as cluster:
        cluster_up = time.time() - started
        jobs = [one_job(cluster, i, Path(work), args.steps) for i in range(args.repeats)]
    first = [j["submit_to_first_step_s"] for j in jobs]
    print(json.dumps({
        "benchmark": "job_submit_latency", "repeats": args.repeats, "steps": args.steps,
        "cluster_start_s": round(cluster_up, 1),
        "submit_to_first_step_s_median": round(statistics.median(first), 1),
        "jobs": [{k: round(v, 2) for k, v in j.items()} for j in jobs],
        "auth": "token", "workers": 1,
    }, indent=2))


if __name__ == "__main__":
    main()
