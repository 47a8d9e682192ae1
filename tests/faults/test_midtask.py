"""Mid-task checkpoints (``train.checkpoint_every``, ``train.checkpoint_on_preemption``): a run
stopped inside a task resumes at the last saved step, and its per-step losses, final matrix and
final weights equal an uninterrupted run's.

The strategy is ZSCL with a weight ensemble every 3 steps: its teacher and L2 anchor are rebuilt by
``before_stage`` on resume, its running average must come from the checkpoint
(``stage_state_dict``), and its reference batches are drawn per step. Everything runs in this process through Ray Train's local mode: the fault (``medcl.faults``,
``MEDCL_FAULT_ACTION=raise``) raises at step 7 of task 2 instead of leaving the process. The
schedule is cosine with warm-up, so a resumed run that rebuilt the LR scheduler, the AdamW moments
or the data order from scratch would log other losses from its first resumed step.
"""
from __future__ import annotations

import pytest
import ray.train

from faultkit import assert_same_final_model, attempts, fault_experiment, read_events
from local_sequence import run_local
from medcl.config import validate_experiment
from medcl.engine.checkpoint import read_state

SCHEDULE = {"schedule": "cosine", "warmup_steps": 3}
EVERY, FAULT_STEP = 3, 7
ZSCL = {"name": "zscl", "reference": {"name": "synthmed", "domains": ["ct"], "per_class": 1},
        "reference_batch_size": 8, "ensemble_period": 0.3}


def _config(root, name: str, **train):
    return validate_experiment({**fault_experiment(root, name, **SCHEDULE, **train), "strategy": ZSCL})


def _losses(events: list[dict]) -> dict[tuple[str, int], float]:
    """The loss of each (task, step), from the last attempt that logged it."""
    return {(e["task"], e["step"]): e["loss"] for e in events if e["kind"] == "step"}


def _assert_same_losses(run_dir, reference_dir) -> None:
    got, expected = _losses(read_events(run_dir)), _losses(read_events(reference_dir))
    assert got.keys() == expected.keys()
    for key, loss in expected.items():
        assert abs(got[key] - loss) <= 1e-6 * max(1.0, abs(loss)), (key, got[key], loss)


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    """The uninterrupted run, without mid-task checkpoints."""
    return run_local(_config(tmp_path_factory.mktemp("ref"), "ref"))


@pytest.fixture(scope="module")
def resumed(ray_session, reference, tmp_path_factory):
    """The same run with ``checkpoint_every: 3``, stopped at step 7 of task 2, then resumed."""
    root = tmp_path_factory.mktemp("midtask")
    config = _config(root / "out", "midtask", checkpoint_every=EVERY)
    patch = pytest.MonkeyPatch()
    patch.setenv("MEDCL_FAULT", f"step={FAULT_STEP},stage=2")
    patch.setenv("MEDCL_FAULT_ACTION", "raise")
    patch.setenv("MEDCL_FAULT_ONCE", str(root / "fired"))
    try:
        with pytest.raises(Exception, match="injected fault"):
            run_local(config)
        assert (root / "fired-rank0").exists()
        saved = sorted(p.name for p in (config.run_dir / "checkpoints").glob("task-*"))
        return run_local(config, fresh=False), saved
    finally:
        patch.undo()


def test_mid_task_checkpoints_are_written_every_n_steps_and_pruned(resumed):
    """Task 1's mid-task checkpoints went with its boundary; in task 2 step 6's replaced step 3's."""
    result, saved_before_resume = resumed
    assert saved_before_resume == ["task-0", "task-1", "task-1-step-6"]
    finished = sorted(p.name for p in (result.run.path / "checkpoints").glob("task-*"))
    assert finished == ["task-0", "task-1", "task-2"]


def test_the_resumed_run_restarts_at_the_last_saved_step(resumed):
    result, _ = resumed
    events = read_events(result.run.path)
    interrupted, restarted = attempts(events, stage=2)
    assert [e["step"] for e in interrupted] == list(range(1, FAULT_STEP))
    assert [e["step"] for e in restarted] == list(range(7, 11))  # task-1-step-6: only step 7 is trained again
    assert result.resumed_after == 1


def test_the_resumed_run_equals_the_uninterrupted_one(resumed, reference):
    result, _ = resumed
    _assert_same_losses(result.run.path, reference.run.path)
    assert (result.state.rows, result.state.auc_rows) == (reference.state.rows, reference.state.auc_rows)
    assert_same_final_model(result.run.path, reference.run.path, atol=1e-6)


def test_a_preemption_notice_writes_a_checkpoint_that_resumes_exactly(ray_session, reference, tmp_path, monkeypatch):
    """Ray Train announces a preemption after step 4 of task 2 (local mode has no watcher, so
    ``ray.train.get_preemption_info`` is replaced): one checkpoint is written there; the node goes
    at step 6, and the resumed run trains steps 5-10 to the reference's results."""
    calls = []

    def notice():
        calls.append(1)
        return ray.train.PreemptionInfo(deadline_ms=None, preempted_node_to_ranks={"node": [0]}) if len(calls) > 12 else None

    monkeypatch.setattr(ray.train, "get_preemption_info", notice)
    config = _config(tmp_path, "preempted", checkpoint_on_preemption=True)
    monkeypatch.setenv("MEDCL_FAULT", "step=6,stage=2")
    monkeypatch.setenv("MEDCL_FAULT_ACTION", "raise")
    monkeypatch.setenv("MEDCL_FAULT_ONCE", str(tmp_path / "fired"))
    with pytest.raises(Exception, match="injected fault"):
        run_local(config)
    checkpoints = config.run_dir / "checkpoints"
    assert len(calls) == 9 + 4  # task 1: steps 1-9 (none after the last step); task 2: until the notice
    assert sorted(p.name for p in checkpoints.glob("task-*")) == ["task-0", "task-1", "task-1-step-4"]
    assert read_state(checkpoints / "task-1-step-4").mid_step == 4
    result = run_local(config, fresh=False)
    assert [e["step"] for e in attempts(read_events(result.run.path), stage=2)[-1]] == list(range(5, 11))
    assert (result.state.rows, result.state.auc_rows) == (reference.state.rows, reference.state.auc_rows)
    assert_same_final_model(result.run.path, reference.run.path, atol=1e-6)


def test_checkpoint_every_is_validated_by_name():
    from medcl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.checkpoint_every"):
        validate_experiment(fault_experiment("/tmp/unused", "bad", checkpoint_every=0))
