"""The ``medcl run`` process killed mid-sequence: the same command resumes after the last finished task.

``medcl run`` is started in its own process group (it starts its own local Ray: GCS, raylet,
workers, all its descendants). Its Train worker holds at step 3 of task 2 (``faultkit.held_fault``,
action ``hold``: it writes where it is and waits for its own death), so when the whole group gets
SIGKILL, as an OOM killer or a closed laptop would, the run is known to be inside task 2 with
``checkpoints/task-1`` written, whatever the machine's speed. Every process it started must then be
gone (Ray's workers fate-share with their raylet). Re-running the experiment resumes after task 1:
task 1 is not trained again (events.jsonl has one stage start for it) and the matrix equals the
uninterrupted run's. The re-run goes through Ray Train's local mode in this process
(``run_local``: the same worker loop and resume path, without a second Ray start).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import yaml

from faultkit import STEPS, assert_same_final_model, at_point, fault_experiment, held_fault, read_events, wait_until
from medcl.config import validate_experiment
from medcl.engine.checkpoint import CorruptCheckpointError, verify_checkpoint
from medcl.rundir import read_matrix_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow]
HOLD_AT_STEP = 3


def _persisted(checkpoint) -> bool:
    try:
        verify_checkpoint(checkpoint)
    except (CorruptCheckpointError, OSError):
        return False
    return True


def _start_and_kill(experiment, root, log_path) -> tuple[list[int], float]:
    """Start ``medcl run`` with its worker held at step 3 of task 2, SIGKILL its process group once
    the worker holds there; return the PIDs it had started and the kill time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MEDCL_FAULT"))}
    env.update(held_fault(root, f"step={HOLD_AT_STEP},stage=2", action="hold"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medcl.cli", "run", str(experiment), "--no-dashboard"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until(lambda: at_point(root, 0), "the worker at step 3 of task 2", alive=lambda: proc.poll() is None)
        started = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)] + [proc.pid]
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        proc.wait(timeout=30)
        return started, killed_at
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if log_path.exists():
            print(log_path.read_text()[-3000:])
        raise


def _alive(pids: list[int]) -> list[psutil.Process]:
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(scope="module")
def killed_and_resumed(ray_session, tmp_path_factory):
    from local_sequence import run_local

    root = tmp_path_factory.mktemp("driver-kill")
    raw = fault_experiment(root, "driver-kill")
    experiment = root / "driver-kill.yaml"
    experiment.write_text(yaml.safe_dump(raw))
    checkpoints = root / "driver-kill" / "checkpoints"
    started, killed_at = _start_and_kill(experiment, root, root / "first.log")
    deadline, survivors = time.monotonic() + 60, _alive(started)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.5)
        survivors = _alive(started)
    for process in survivors:  # only what this test started, by PID
        process.kill()
    done_at_kill = sorted(p.name for p in checkpoints.glob("task-*"))
    complete_at_kill = [p.name for p in sorted(checkpoints.glob("task-*")) if _persisted(p)]
    killed_events = read_events(root / "driver-kill")
    resumed = run_local(validate_experiment(raw), fresh=False)
    return {"started": started, "survivors": [p.pid for p in survivors], "done_at_kill": done_at_kill,
            "complete_at_kill": complete_at_kill, "killed_events": killed_events, "held": at_point(root, 0),
            "resumed": resumed, "killed_at": killed_at}


def test_no_process_of_the_killed_run_survives(killed_and_resumed):
    assert len(killed_and_resumed["started"]) > 2, "medcl run should have started a local Ray"
    assert killed_and_resumed["survivors"] == [], "processes of the killed run outlived it"


def test_the_kill_landed_inside_task_2(killed_and_resumed):
    held = killed_and_resumed["held"]
    assert (held["stage"], held["step"], held["rank"]) == (2, HOLD_AT_STEP, 0)
    assert killed_and_resumed["done_at_kill"] == killed_and_resumed["complete_at_kill"] == ["task-0", "task-1"]
    events = killed_and_resumed["killed_events"]
    assert [e["stage"] for e in events if e["kind"] == "stage_start"] == [1, 2]
    assert [e["step"] for e in events if e["kind"] == "step" and e["task"] == "ultrasound"] == [1, 2]


def test_resumes_after_the_last_finished_task(killed_and_resumed):
    resumed = killed_and_resumed["resumed"]
    assert resumed.resumed_after == 1
    events = read_events(resumed.run.path)
    assert [e["stage"] for e in events if e["kind"] == "stage_start"].count(1) == 1, "task 1 trained again"
    assert [e["step"] for e in events if e["kind"] == "step" and e["task"] == "xray"] == list(range(1, STEPS + 1))
    assert [e["after"] for e in events if e["kind"] == "row"].count("xray") == 1


def test_metrics_equal_the_uninterrupted_run(killed_and_resumed, reference_run):
    _, _, expected = read_matrix_csv(reference_run.run.matrix)
    labels, _, got = read_matrix_csv(killed_and_resumed["resumed"].run.matrix)
    assert labels == ["zero_shot", "xray", "ultrasound"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert_same_final_model(killed_and_resumed["resumed"].run.path, reference_run.run.path)
    for key in ("transfer", "avg", "last", "bwt", "forgetting", "fwt"):
        assert killed_and_resumed["resumed"].metrics[key] == pytest.approx(reference_run.metrics[key], abs=1e-6)
