"""A Train worker killed mid-task: Ray Train restarts the worker group from the last task checkpoint.

``MEDCL_FAULT="step=5,stage=2,rank=1"`` makes rank 1 of 2 stop after step 5 of task 2 and hold
there (``faultkit.held_fault``); once rank 0 has logged step 5 too (it then waits for rank 1 in the
next gradient all-reduce) the test lets rank 1 leave with ``os._exit`` (no cleanup, as a preempted
machine). The fault point is thus reached, and acted on, whatever the timing; ``MEDCL_FAULT_ONCE``
lets it fire once. With ``train.max_failures: 1`` Ray Train restarts both workers, which restore
``task-1`` (model, strategy state, matrix so far) and train task 2 again from its step 0. What is
lost: the 5 steps of the interrupted task. The restarted attempt replays the interrupted one exactly
(the same loss at each of steps 1-5, to 1e-6), so the run ends as an uninterrupted one would. (It is
compared with itself, not with the 1-worker reference: with AdamW, 1 and 2 workers agree only to
float rounding of the all-reduce, which Adam amplifies on parameters with near-zero gradients.)
"""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from faultkit import (STEPS, assert_replayed, at_point, fault_experiment, held_fault, logged_steps, read_events,
                      release, wait_until)
from medcl.config import validate_experiment
from medcl.engine.runner import run_experiment
from medcl.rundir import read_matrix_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow]
FAULT_STEP = 5


@pytest.fixture(scope="module")
def faulted_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("worker-fault")
    config = validate_experiment(fault_experiment(root, "worker-fault", workers=2, max_failures=1))
    env = held_fault(root, f"step={FAULT_STEP},stage=2,rank=1")
    saved = {k: os.environ.get(k) for k in env}
    seen, done = {}, threading.Event()
    releaser = threading.Thread(target=_release_when_logged, args=(root, config.run_dir, seen, done), daemon=True)
    os.environ.update(env)
    try:
        releaser.start()
        result = run_experiment(config)
    finally:
        done.set()
        release(root)  # never leave a held worker behind
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    releaser.join(timeout=5)
    return result, root, seen


def _release_when_logged(root, run_dir, seen: dict, done: threading.Event) -> None:
    """Let rank 1 exit once it holds at step 5 of task 2 and rank 0 has logged that step."""
    running = lambda: not done.is_set()  # noqa: E731
    try:
        seen["at"] = wait_until(lambda: at_point(root, 1), "rank 1 at the fault point", alive=running)
        wait_until(lambda: FAULT_STEP in logged_steps(run_dir, "ultrasound"), "rank 0's step 5 of task 2",
                   alive=running)
        seen["logged_before_release"] = logged_steps(run_dir, "ultrasound")
    except AssertionError as exc:
        seen["error"] = str(exc)
    finally:
        release(root)


def test_the_fault_fired_at_its_point_and_the_run_finished(faulted_run):
    result, root, seen = faulted_run
    assert (root / "fired").exists(), "the injected fault did not fire"
    assert "error" not in seen, seen.get("error")
    assert seen["at"]["step"] == FAULT_STEP and seen["at"]["stage"] == 2 and seen["at"]["rank"] == 1
    assert seen["logged_before_release"] == list(range(1, FAULT_STEP + 1)), "rank 0 moved past the held step"
    assert result.resumed_after is None and result.state.stages_done == 2 and result.metrics["complete"]
    assert (result.run.checkpoints / "task-2" / "strategy-rank1.pt").exists()


def test_the_finished_two_worker_run_has_every_output(faulted_run):
    result = faulted_run[0]
    labels, tasks, values = read_matrix_csv(result.run.matrix)
    assert labels == ["zero_shot", "xray", "ultrasound"] and tasks == ["xray", "ultrasound"]
    assert values.shape == (3, 2) and np.isfinite(values).all()
    metrics = json.loads(result.run.metrics.read_text())
    assert metrics["complete"] and set(metrics) >= {"transfer", "avg", "last", "bwt", "forgetting", "fwt"}
    assert metrics["last"] == pytest.approx(values[2].mean())
    assert len(metrics["wall_time_s_per_task"]) == 2 and metrics["trainable_parameters"] > 0
    assert sorted(p.name for p in result.run.checkpoints.glob("task-*")) == ["task-0", "task-1", "task-2"]
    assert "data:image/png;base64," in result.run.report.read_text()


def test_the_restart_replays_the_interrupted_steps_exactly(faulted_run):
    events = read_events(faulted_run[0].run.path)
    assert assert_replayed(events, stage=2) == FAULT_STEP
    labels, _, values = read_matrix_csv(faulted_run[0].run.matrix)
    assert labels == ["zero_shot", "xray", "ultrasound"] and np.isfinite(values).all()


def test_only_the_interrupted_steps_are_trained_again(faulted_run):
    events = read_events(faulted_run[0].run.path)
    assert [e["stage"] for e in events if e["kind"] == "stage_start"] == [1, 2, 2]
    assert [e["step"] for e in events if e["kind"] == "step" and e["task"] == "xray"] == list(range(1, STEPS + 1))
    task2 = [e["step"] for e in events if e["kind"] == "step" and e["task"] == "ultrasound"]
    assert task2 == list(range(1, FAULT_STEP + 1)) + list(range(1, STEPS + 1)), "lost: steps 1-5 of task 2 only"
    assert [e["after"] for e in events if e["kind"] == "row"] == ["zero_shot", "xray", "ultrasound"]
