"""What injected faults cost: work lost and recovery time (the timed rows of docs/reliability.md).

    .venv/bin/python experiments/benchmarks/fault_recovery.py [--steps 20] [--fault-step 10] [--out FILE]
        [--only driver_kill,worker_kill,corrupt_checkpoint,bad_config]

Every row runs the same 2-task synthmed sequence (medcl-tiny, finetune, every step logged):

* ``driver_kill``: ``medcl run`` in its own process group (its own local Ray, 1 worker), SIGKILL
  to the group once ``checkpoints/task-1`` is persisted; then the same command again. Lost: the
  task-2 steps done before the kill. Recovery: kill -> first task-2 step of the re-run (a new Ray
  start, Train controller and worker, restore of task-1), and the re-run's total.
* ``worker_kill``: 2 Train workers, ``MEDCL_FAULT=step=<fault-step>,stage=2,rank=1`` once,
  ``train.max_failures: 1``. Lost: the steps of task 2 before the kill. Recovery: the killed
  step's event -> the restarted stage start (detection, teardown, new worker processes, restore),
  and -> the same step reached again.
* ``corrupt_checkpoint``: sha256 check of a whole checkpoint (done before every resume), and the
  time to name a flipped byte in ``model.safetensors``.
* ``bad_config``: ``medcl run`` on an experiment with a wrong field, to exit status 2.

Times come from events.jsonl timestamps (``time`` of each logged step and stage start). Prints JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from medcl.config import validate_experiment
from medcl.engine.checkpoint import CorruptCheckpointError, verify_checkpoint

ROWS = ("driver_kill", "worker_kill", "corrupt_checkpoint", "bad_config")


def experiment(out: Path, name: str, steps: int, workers: int = 1, **train) -> dict:
    return {"name": name, "seed": 0, "output_dir": str(out),
            "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 32, "val_per_class": 1,
                          "test_per_class": 10},
            "model": {"name": "medcl-tiny"}, "strategy": {"name": "finetune"},
            "train": {"workers": workers, "batch_size": 16, "lr": 3e-3, "steps_per_task": steps, "log_every": 1,
                      **train}}


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def persisted(checkpoint: Path) -> bool:
    try:
        verify_checkpoint(checkpoint)
    except (CorruptCheckpointError, OSError):
        return False
    return True


def medcl_run(experiment_file: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MEDCL_FAULT"))}
    with open(log, "a") as handle:
        return subprocess.Popen([sys.executable, "-m", "medcl.cli", "run", str(experiment_file), "--no-dashboard"],
                                stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def driver_kill(out: Path, steps: int) -> dict:
    raw = experiment(out, "driver-kill", steps)
    experiment_file = out / "driver-kill.yaml"
    experiment_file.write_text(yaml.safe_dump(raw))
    run_dir, log = out / "driver-kill", out / "driver-kill.log"
    started = time.time()
    proc = medcl_run(experiment_file, log)
    while not persisted(run_dir / "checkpoints" / "task-1"):
        if proc.poll() is not None:
            raise RuntimeError(f"medcl run exited early; see {log}")
        time.sleep(0.1)
    descendants = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    killed_at = time.time()
    proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=60)
    gone_s = time.time() - killed_at
    for process in alive:  # only processes this script started
        process.kill()
    lost = [e["step"] for e in events(run_dir) if e["kind"] == "step" and e["task"] == "ultrasound"]
    rerun_started = time.time()
    rerun = medcl_run(experiment_file, log)
    code = rerun.wait()
    rerun_s = time.time() - rerun_started
    after = [e for e in events(run_dir) if e["time"] > rerun_started]
    first_step = next(e["time"] for e in after if e["kind"] == "step")
    return {"injected": "SIGKILL to the process group of `medcl run` once checkpoints/task-1 is persisted",
            "first_run_to_kill_s": round(killed_at - started, 2), "processes_started": len(descendants) + 1,
            "survivors_after_60s": len(alive), "all_gone_after_s": round(gone_s, 2),
            "lost_tasks": 0, "lost_steps": len(lost), "rerun_exit_code": code,
            "tasks_trained_again": sum(e["kind"] == "stage_start" and e["stage"] == 1 for e in after),
            "recovery_s_kill_to_first_step": round(first_step - killed_at, 2),
            "rerun_to_first_step_s": round(first_step - rerun_started, 2), "rerun_total_s": round(rerun_s, 2)}


def worker_kill(out: Path, steps: int, fault_step: int) -> dict:
    from medcl.engine.runner import run_experiment

    config = validate_experiment(experiment(out, "worker-kill", steps, workers=2, max_failures=1))
    os.environ.update({"MEDCL_FAULT": f"step={fault_step},stage=2,rank=1", "MEDCL_FAULT_ONCE": str(out / "fired")})
    started = time.time()
    try:
        result = run_experiment(config)
    finally:
        os.environ.pop("MEDCL_FAULT"), os.environ.pop("MEDCL_FAULT_ONCE")
    wall = time.time() - started
    log = events(result.run.path)
    starts = [i for i, e in enumerate(log) if e["kind"] == "stage_start" and e["stage"] == 2]
    if len(starts) != 2:
        raise RuntimeError(f"expected one restart of stage 2, saw {len(starts)} stage starts")
    first, second = starts
    killed = [e for e in log[first:second] if e["kind"] == "step"][-1]
    again = [e for e in log[second:] if e["kind"] == "step"]
    same_step = next(e for e in again if e["step"] == killed["step"])
    return {"injected": f"MEDCL_FAULT=step={fault_step},stage=2,rank=1 + MEDCL_FAULT_ONCE (2 workers, "
                        "train.max_failures=1)",
            "fired": (out / "fired").exists(), "lost_tasks": 0, "lost_steps": killed["step"],
            "recovery_s_to_restarted_stage": round(log[second]["time"] - killed["time"], 2),
            "recovery_s_to_same_step": round(same_step["time"] - killed["time"], 2),
            "run_total_s": round(wall, 2), "checkpoint": str(result.run.checkpoints / "task-2")}


def corrupt_checkpoint(checkpoint: Path) -> dict:
    model = checkpoint / "model.safetensors"
    started = time.perf_counter()
    verify_checkpoint(checkpoint)
    verify_s = time.perf_counter() - started
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    started = time.perf_counter()
    try:
        verify_checkpoint(checkpoint)
        named = None
    except CorruptCheckpointError as exc:
        named = str(exc)
    return {"injected": "one flipped byte in model.safetensors", "checkpoint_bytes": sum(
                p.stat().st_size for p in checkpoint.iterdir()),
            "verify_s": round(verify_s, 4), "detect_s": round(time.perf_counter() - started, 4),
            "error": named, "lost": "nothing trained; the run refuses to resume until the file is restored"}


def bad_config(out: Path) -> dict:
    from medcl.cli import main

    bad = experiment(out, "bad", 5)
    bad["train"]["lr"] = "fast"
    path = out / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main(["run", str(path), "--no-dashboard"])
    return {"injected": "train.lr: fast", "exit_code": code, "seconds": round(time.perf_counter() - started, 3),
            "message": err.getvalue().strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per task")
    parser.add_argument("--fault-step", type=int, default=10, help="step of task 2 at which rank 1 is killed")
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows to measure")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    only = set(args.only.split(","))
    results: dict = {"steps_per_task": args.steps, "cpus": os.cpu_count(), "load_average": os.getloadavg()}

    def measure(row: str, fn, *fn_args) -> dict:
        """One row; an error is recorded in the JSON (the rows are independent), which is rewritten
        after every row so a long measurement keeps what it has."""
        try:
            results[row] = fn(*fn_args)
        except Exception as exc:  # a run that fails on an overloaded machine is a result too
            results[row] = {"error": f"{type(exc).__name__}: {exc}"}
        if args.out:
            args.out.write_text(json.dumps(results, indent=1) + "\n")
        return results[row]

    with tempfile.TemporaryDirectory(prefix="medcl-faults-") as tmp:
        out = Path(tmp)
        if "bad_config" in only:
            measure("bad_config", bad_config, out)
        if "driver_kill" in only:
            measure("driver_kill", driver_kill, out, args.steps)
        if only & {"worker_kill", "corrupt_checkpoint"}:
            checkpoint = measure("worker_kill", worker_kill, out, args.steps, args.fault_step).pop("checkpoint", None)
            if "corrupt_checkpoint" in only and checkpoint:
                measure("corrupt_checkpoint", corrupt_checkpoint, Path(checkpoint))
            import ray

            ray.shutdown()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
