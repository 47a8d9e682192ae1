"""The ``medcl run`` process killed mid-sequence: the same command resumes after the last finished task.

``medcl run`` is started in its own process group (it starts its own local Ray: GCS, raylet,
workers, all its descendants); once ``checkpoints/task-1`` is fully written the whole group gets
SIGKILL, as an OOM killer or a closed laptop would. Every process it started must then be gone
(Ray's workers fate-share with their raylet). Re-running the experiment resumes after task 1:
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

from faultkit import STEPS, assert_same_final_model, fault_experiment, read_events
from medcl.config import validate_experiment
from medcl.engine.checkpoint import CorruptCheckpointError, verify_checkpoint
from medcl.rundir import read_matrix_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow]
START_LIMIT_S = 420


def _persisted(checkpoint) -> bool:
    try:
        verify_checkpoint(checkpoint)
    except (CorruptCheckpointError, OSError):
        return False
    return True


def _start_and_kill(experiment, checkpoint, log_path) -> tuple[list[int], float]:
    """Start ``medcl run``, SIGKILL its process group once ``checkpoint`` is complete; return the
    PIDs it had started and the kill time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MEDCL_FAULT"))}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medcl.cli", "run", str(experiment), "--no-dashboard"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + START_LIMIT_S
    try:
        while not _persisted(checkpoint):
            assert proc.poll() is None, f"medcl run exited early ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {checkpoint} after {START_LIMIT_S} s"
            time.sleep(0.2)
        started = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)] + [proc.pid]
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        proc.wait(timeout=30)
        return started, killed_at
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
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
    started, killed_at = _start_and_kill(experiment, checkpoints / "task-1", root / "first.log")
    deadline, survivors = time.monotonic() + 60, _alive(started)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.5)
        survivors = _alive(started)
    for process in survivors:  # only what this test started, by PID
        process.kill()
    done_at_kill = sorted(p.name for p in checkpoints.glob("task-*"))
    resumed = run_local(validate_experiment(raw), fresh=False)
    return {"started": started, "survivors": [p.pid for p in survivors], "done_at_kill": done_at_kill,
            "resumed": resumed, "killed_at": killed_at}


def test_no_process_of_the_killed_run_survives(killed_and_resumed):
    assert len(killed_and_resumed["started"]) > 2, "medcl run should have started a local Ray"
    assert killed_and_resumed["survivors"] == [], "processes of the killed run outlived it"


def test_resumes_after_the_last_finished_task(killed_and_resumed):
    assert killed_and_resumed["done_at_kill"] in (["task-0", "task-1"], ["task-0", "task-1", "task-2"])
    resumed = killed_and_resumed["resumed"]
    assert resumed.resumed_after == 1 or killed_and_resumed["done_at_kill"][-1] == "task-2"
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
