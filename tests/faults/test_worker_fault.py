"""A Train worker killed mid-task: Ray Train restarts the worker group from the last task checkpoint.

``MEDCL_FAULT="step=5,stage=2,rank=1"`` makes rank 1 of 2 leave with ``os._exit`` after step 5 of
task 2 (no cleanup, as a preempted machine); ``MEDCL_FAULT_ONCE`` lets it fire once. With
``train.max_failures: 1`` Ray Train restarts both workers, which restore ``task-1`` (model,
strategy state, matrix so far) and train task 2 again from its step 0. What is lost: the 5 steps of
the interrupted task. The restarted attempt replays the interrupted one exactly (the same loss at
each of steps 1-5, to 1e-6), so the run ends as an uninterrupted one would. (It is compared with
itself, not with the 1-worker reference: with AdamW, 1 and 2 workers agree only to float rounding
of the all-reduce, which Adam amplifies on parameters with near-zero gradients.)
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from faultkit import STEPS, assert_replayed, fault_experiment, read_events
from medcl.config import validate_experiment
from medcl.engine.runner import run_experiment
from medcl.rundir import read_matrix_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow]
FAULT_STEP = 5


@pytest.fixture(scope="module")
def faulted_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("worker-fault")
    config = validate_experiment(fault_experiment(root, "worker-fault", workers=2, max_failures=1))
    env = {"MEDCL_FAULT": f"step={FAULT_STEP},stage=2,rank=1", "MEDCL_FAULT_ONCE": str(root / "fired")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = run_experiment(config)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return result, root


def test_the_fault_fired_and_the_run_finished(faulted_run):
    result, root = faulted_run
    assert (root / "fired").exists(), "the injected fault did not fire"
    assert result.resumed_after is None and result.state.stages_done == 2 and result.metrics["complete"]
    assert (result.run.checkpoints / "task-2" / "strategy-rank1.pt").exists()


def test_the_finished_two_worker_run_has_every_output(faulted_run):
    result, _ = faulted_run
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
