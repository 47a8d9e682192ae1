"""Retries for real clusters: unlimited failures, a node wait as long as an autoscale, mid-task
checkpoints by default on a GPU, and a run whose worker is killed three times.

The three kills: ``MEDCL_FAULT="step=5,stage=1;after_stage=1;step=8,stage=2"`` (``medcl.faults``,
each fires once) makes the one Ray Train worker of ``medcl run`` leave with ``os._exit`` at step 5 of
task 1, right after task 1's checkpoint, and at step 8 of task 2: a process kill, not a node kill
(a node costs a raylet and minutes on a 2-core CI machine; Ray Train handles a dead worker the same
way: the worker group is restarted and the loop resumes from the newest valid checkpoint). With
``checkpoint_every: 3`` and ``max_failures: 3`` the run finishes; each restart begins at the step
after the last checkpoint written before its kill (4, task 2 from step 1, 7), so what is trained
twice is only what followed that checkpoint, and the result equals the uninterrupted run's.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from faultkit import STEPS, assert_same_final_model, attempts, fault_experiment, read_events
from medcl.config import validate_experiment
from medcl.engine.launch import START_TIMEOUT_VARIABLE, Workers, _set_start_timeout, make_trainer
from medcl.engine.midtask import GPU_CHECKPOINT_EVERY, resolve_every
from medcl.errors import ConfigError

EVERY = 3
KILLS = "step=5,stage=1;after_stage=1;step=8,stage=2"


def test_max_failures_minus_one_is_unlimited_and_the_controller_limit_follows():
    config = validate_experiment(fault_experiment("/tmp/unused", "retries", max_failures=-1))
    workers = Workers.of(config.train)
    assert (workers.max_failures, workers.controller_failure_limit) == (-1, -1)
    assert Workers.of(validate_experiment(fault_experiment("/tmp/unused", "r", max_failures=2)).train) \
        .controller_failure_limit == 2
    with pytest.raises(ConfigError, match=r"train\.max_failures"):
        validate_experiment(fault_experiment("/tmp/unused", "bad", max_failures=-2))
    trainer = make_trainer(lambda config: None, {}, "/tmp/unused-run", workers, meet="tcp")
    failure = trainer.run_config.failure_config
    assert (failure.max_failures, failure.controller_failure_limit) == (-1, -1)


def test_pretraining_takes_the_same_retry_fields():
    from medcl.pretrain.config import validate_pretrain

    config = validate_pretrain({"name": "p", "train": {"steps": 2, "max_failures": -1, "node_wait_s": 60}})
    assert (Workers.of(config.train).controller_failure_limit, Workers.of(config.train).node_wait_s) == (-1, 60)


def test_node_wait_sets_ray_trains_start_timeout_unless_the_user_did(monkeypatch):
    config = validate_experiment(fault_experiment("/tmp/unused", "wait"))
    assert config.train.node_wait_s == 900  # a GPU node from an autoscaler, not Ray's 60 s
    monkeypatch.delenv(START_TIMEOUT_VARIABLE, raising=False)
    _set_start_timeout(900.0)
    assert os.environ[START_TIMEOUT_VARIABLE] == "900"
    _set_start_timeout(1200.0)  # medcl's own value: the next run's node_wait_s replaces it
    assert os.environ[START_TIMEOUT_VARIABLE] == "1200"
    monkeypatch.setenv(START_TIMEOUT_VARIABLE, "77")  # cluster/runtime_env.yaml or a sweep set it
    _set_start_timeout(900.0)
    assert os.environ[START_TIMEOUT_VARIABLE] == "77"


def test_mid_task_checkpoints_are_on_by_default_on_a_gpu_only():
    config = validate_experiment(fault_experiment("/tmp/unused", "auto"))
    assert config.train.checkpoint_every == "auto"
    assert resolve_every("auto", "cuda") == GPU_CHECKPOINT_EVERY and resolve_every("auto", "cpu") is None
    assert resolve_every(None, "cuda") is None and resolve_every(7, "cpu") == 7
    with pytest.raises(ConfigError, match=r"train\.checkpoint_every"):
        validate_experiment(fault_experiment("/tmp/unused", "bad", checkpoint_every=0))


@pytest.fixture(scope="module")
def killed_three_times(ray_session, tmp_path_factory):
    from medcl.engine.runner import run_experiment

    root = tmp_path_factory.mktemp("triple-kill")
    config = validate_experiment(fault_experiment(root, "triple-kill", workers=1, max_failures=3,
                                                  checkpoint_every=EVERY))
    patch = pytest.MonkeyPatch()
    patch.setenv("MEDCL_FAULT", KILLS)
    patch.setenv("MEDCL_FAULT_ONCE", str(root / "fired"))
    try:
        result = run_experiment(config)
    finally:
        patch.undo()
    return result, root


@pytest.mark.ray
@pytest.mark.slow
def test_three_kills_in_one_run_finish_with_nothing_trained_twice_before_the_last_checkpoint(killed_three_times,
                                                                                           reference_run):
    result, root = killed_three_times
    assert sorted(p.name for p in root.glob("fired-*")) == ["fired-0-rank0", "fired-1-rank0", "fired-2-rank0"]
    assert result.resumed_after is None and result.state.stages_done == 2 and result.metrics["complete"]
    events = read_events(result.run.path)
    task1, task2 = attempts(events, stage=1), attempts(events, stage=2)
    # task 1: killed at step 5 (trained, not logged); checkpoint at step 3 -> the restart trains 4..10
    assert [[e["step"] for e in run] for run in task1] == [[1, 2, 3, 4], list(range(4, STEPS + 1))]
    # killed after task 1's checkpoint: task 1 is not trained again; task 2 killed at step 8 -> from 7
    assert [[e["step"] for e in run] for run in task2] == [list(range(1, 8)), list(range(7, STEPS + 1))]
    assert [e["after"] for e in events if e["kind"] == "row"] == ["zero_shot", "xray", "ultrasound"]
    assert not any(e["kind"] == "checkpoint_set_aside" for e in events)
    np.testing.assert_allclose(result.state.rows, reference_run.state.rows, atol=1e-6)
    assert_same_final_model(result.run.path, reference_run.run.path, atol=1e-6)
    assert sorted(p.name for p in result.run.checkpoints.glob("task-*")) == ["task-0", "task-1", "task-2"]
