"""A real two-node Ray cluster with separate node-local disks and an S3-compatible store, on loopback.

One cluster for the module (``two_node_cluster.py``): a head on 127.0.0.2 and a worker node on
127.0.0.3, one CPU each, each node in its own mount namespace where the same path
(``cluster.node_local``) is that node's private directory; ``moto_server`` on 127.0.0.1 is the
shared object store. Jobs go through ``ray job submit`` (the entrypoint runs on the head, in the
head's namespace). With one CPU per node, the run's two Train workers (one CPU each) can only be
placed one per node: its checkpoints and progress are written from both nodes into S3.
Skipped, with the exact error, where this machine cannot make mount namespaces.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from s3server import MotoS3, apply_env, restore_env  # noqa: E402
from two_node_cluster import HEAD_IP, WORKER_IP, TwoNodeCluster, namespace_error  # noqa: E402

from medcl import storage  # noqa: E402
from medcl.rundir import read_events  # noqa: E402
from medcl.models.factory import create_model  # noqa: E402
from medcl.models.weights import save_weights  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "medcl-two-node"
MARKER = "medcl-local-edit-marker"
EXPERIMENT = {
    "name": "two-node", "seed": 0,
    "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 8, "val_per_class": 2, "test_per_class": 4},
    "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
    "train": {"workers": 2, "cpus_per_worker": 1, "batch_size": 8, "lr": 2e-3, "steps_per_task": 4, "log_every": 2},
}


@pytest.fixture(scope="module")
def s3():
    with MotoS3() as server:
        previous = apply_env(server.env)  # this process reads the results from the same store
        try:
            server.create_bucket(BUCKET)
            yield server
        finally:
            restore_env(previous)


@pytest.fixture(scope="module")
def cluster(s3):
    reason = namespace_error()
    if reason is not None:
        pytest.skip(f"no private node-local directories on this machine: {reason}")
    # RAY_DEDUP_LOGS=0: every worker line keeps its "(pid=..., ip=...)" prefix in the job's log, never
    # folded into "[repeated Nx across cluster]" (which drops the ip the py_modules check looks for)
    with TwoNodeCluster(head_cpus=1, worker_cpus=1,
                        env={**s3.env, "MEDCL_TELEMETRY": "0", "RAY_DEDUP_LOGS": "0"}) as started:
        yield started


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("job")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    return folder


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory) -> Path:
    """What a newcomer has after ``git clone``: the repository's tracked files only (as they are in
    this working tree; no .venv, runs/ or build outputs), plus one local edit: importing its medcl
    prints a marker."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True)
    if listed.returncode:
        pytest.skip(f"not a git checkout, no tracked files to copy: {listed.stderr.decode()[:200]}")
    root = tmp_path_factory.mktemp("checkout")
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is not copied
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    with open(root / "platform" / "medcl" / "__init__.py", "a") as handle:
        handle.write(f"\nprint('{MARKER}', __file__, flush=True)\n")
    return root


def _readme_submit_command(cluster: TwoNodeCluster, bucket: str) -> list[str]:
    """The README's ``ray job submit`` line, aimed at this cluster and bucket."""
    readme = (REPO / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith("ray job submit ")]
    assert len(lines) == 1, f"the README shows one ray job submit line, found {lines}"
    line = lines[0].replace("http://HEAD:8265", cluster.dashboard_url).replace("BUCKET", bucket)
    return [cluster.ray, *shlex.split(line)[1:]]


def _run_job(cluster: TwoNodeCluster, name: str, output_dir: str, job_dir: Path, cwd: Path = REPO,
             extra: list[str] = ()) -> tuple[str, str]:
    """``ray job submit`` from ``cwd`` with the shipped cluster/runtime_env.yaml (its py_modules are
    taken from ``cwd``); the job's status and logs."""
    cluster.submit(name, ["medcl", "run", "tiny.yaml", "--output-dir", output_dir, *extra], working_dir=job_dir,
                   runtime_env=REPO / "cluster" / "runtime_env.yaml", cwd=cwd)
    return cluster.wait(name, timeout=600), cluster.logs(name)


def test_the_nodes_are_two_with_one_cpu_each(cluster):
    nodes = sorted((n["node_ip"], n["resources_total"]["CPU"]) for n in cluster.alive_nodes())
    assert nodes == [(HEAD_IP, 1.0), (WORKER_IP, 1.0)]


def test_node_local_output_dir_and_weights_are_refused_before_training(cluster, job_dir):
    output_dir, weights = str(cluster.node_local / "runs"), cluster.node_local / "w.safetensors"
    (cluster.disks["head"] / weights.name).write_bytes(b"only the head has it")
    status, logs = _run_job(cluster, "node-local", output_dir, job_dir, extra=["--set", f"model.pretrained={weights}"])
    assert status == "FAILED", logs[-3000:]
    for field, value in (("output_dir", output_dir), ("model.pretrained", weights)):  # one error names both
        assert f"{field}: {value} is a node-local path: it is not visible on node(s) {WORKER_IP} (" in logs, logs[-3000:]
    assert "e.g. --output-dir s3://BUCKET/runs" in logs and "or into the node image at that path" in logs  # the fixes
    assert "[task 1/2" not in logs and "zero_shot" not in logs  # refused before any training or evaluation
    # the namespaces at work: the head's driver wrote the run directory on the head's disk only
    assert (cluster.disks["head"] / "runs" / "two-node" / "config.yaml").is_file()
    assert list(cluster.disks["worker"].iterdir()) == []
    assert not list((cluster.disks["head"] / "runs").glob(".medcl-shared-*")), "the probe marker is removed"


def test_the_readme_quickstart_submitted_from_a_fresh_checkout_runs_on_both_nodes_into_s3(cluster, fresh_checkout):
    """The README's submit line, run from a fresh checkout's root: experiments/quickstart.yaml and
    cluster/runtime_env.yaml resolve from the upload, the weights come from S3, the checkout's medcl
    (with its local edit) runs on both nodes, and the run lands in S3. Only the sequence is shortened
    (--set), so the test stays within CI's time."""
    weights = save_weights(create_model("medcl-tiny-vit-p4").model, fresh_checkout.parent / "weights.safetensors")
    storage.write_bytes(f"s3://{BUCKET}/weights/model.safetensors", weights.read_bytes())
    command = _readme_submit_command(cluster, BUCKET)
    command[command.index("submit") + 1:command.index("submit") + 1] = ["--submission-id", "quickstart", "--no-wait"]
    shorter = {"benchmark.num_tasks": 2, "benchmark.train_per_class": 8, "benchmark.test_per_class": 4,
               "train.batch_size": 8, "train.steps_per_task": 4, "train.log_every": 2}
    command += [arg for key, value in shorter.items() for arg in ("--set", f"{key}={value}")]
    submitted = subprocess.run(command, env=cluster.env, cwd=fresh_checkout, capture_output=True, text=True, timeout=180)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    status, logs = cluster.wait("quickstart", timeout=600), cluster.logs("quickstart")
    assert status == "SUCCEEDED", logs[-4000:]
    assert "Accuracy matrix" in logs
    # py_modules: the entrypoint and the Train worker on the other node import the submitted copy
    marked = [line for line in logs.splitlines() if MARKER in line]
    assert any("py_modules_files" in line and "ip=" not in line for line in marked), marked  # the entrypoint
    assert any("py_modules_files" in line and f"ip={WORKER_IP}" in line for line in marked), marked
    run = storage.place(f"s3://{BUCKET}/runs/quickstart")
    lines = storage.read_text(run / "matrix.csv").splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["zero_shot", "xray", "ultrasound"]
    metrics = json.loads(storage.read_text(run / "metrics.json"))
    assert metrics["complete"] and metrics["tasks"] == ["xray", "ultrasound"]
    config = yaml.safe_load(storage.read_text(run / "config.yaml"))
    assert config["model"]["pretrained"] == f"s3://{BUCKET}/weights/model.safetensors"
    assert config["model"]["name"] == "medcl-tiny-vit-p4" and config["train"]["workers"] == 2
    events = read_events(run / "events.jsonl")
    assert [e["after"] for e in events if e["kind"] == "row"] == ["zero_shot", "xray", "ultrasound"]
    assert storage.listdir(run / "checkpoints" / "task-2") == [
        "manifest-rank0.json", "manifest-rank1.json", "model.safetensors", "state.json",
        "strategy-rank0.pt", "strategy-rank1.pt"]
    assert storage.is_file(run / "report.html")
    assert not any((disk / "s3:").exists() for disk in cluster.disks.values()) and not Path("s3:").exists()


def test_a_run_in_s3_resumes_after_the_node_of_a_train_worker_is_killed(cluster, job_dir, tmp_path):
    """Last in the module: it replaces the worker node. Both Train workers hold at step 3 of task 2
    (faultkit.held_fault), so the kill always lands there; the worker node's processes are then
    SIGKILLed by PID (a lost VM), a new node joins at the same address (an autoscaler's
    replacement), and Ray Train restarts task 2 from task 1's checkpoint in S3."""
    from faultkit import assert_replayed, at_point, attempts, held_fault, release, wait_until

    spec = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    spec["env_vars"].update(held_fault(tmp_path, "step=3,stage=2"))
    (tmp_path / "runtime_env.yaml").write_text(yaml.safe_dump(spec))
    cluster.submit("node-kill", ["medcl", "run", "tiny.yaml", "--output-dir", f"s3://{BUCKET}/killed",
                                 "--set", "train.max_failures=2", "--set", "train.log_every=1"], working_dir=job_dir,
                   runtime_env=tmp_path / "runtime_env.yaml")
    held = wait_until(lambda: [at_point(tmp_path, r) for r in (0, 1)] if all(at_point(tmp_path, r) for r in (0, 1))
                      else None, "both Train workers at step 3 of task 2", timeout=600,
                      alive=lambda: cluster.status("node-kill") in ("PENDING", "RUNNING"))
    worker_node = next(n["node_id"] for n in cluster.alive_nodes() if n["node_ip"] == WORKER_IP)
    assert sorted(w["node_id"] == worker_node for w in held) == [False, True]  # one worker per node
    killed = cluster.kill_worker_node()
    victim = next(w for w in held if w["node_id"] == worker_node)
    assert victim["pid"] in killed
    replacement = cluster.replace_worker_node()
    release(tmp_path)  # the surviving worker leaves, as the peer of a lost rank fails
    status = cluster.wait("node-kill", timeout=600)
    logs = cluster.logs("node-kill")
    assert status == "SUCCEEDED", logs[-4000:]
    assert replacement != worker_node
    run = storage.place(f"s3://{BUCKET}/killed/two-node")
    events = read_events(run / "events.jsonl")
    assert [e["stage"] for e in events if e["kind"] == "stage_start"] == [1, 2, 2]  # task 1 not trained again
    assert [e["step"] for e in attempts(events, stage=2)[0]] == [1, 2]  # step 3 was held, never logged
    assert assert_replayed(events, stage=2) == 2  # the restarted task 2 repeats the lost steps exactly
    assert [e["step"] for e in attempts(events, stage=2)[1]] == [1, 2, 3, 4]
    assert [e["after"] for e in events if e["kind"] == "row"] == ["zero_shot", "xray", "ultrasound"]
    assert json.loads(storage.read_text(run / "metrics.json"))["complete"]
