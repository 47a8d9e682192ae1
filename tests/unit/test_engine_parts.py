"""Engine pieces that need no Ray: sampling, preprocessing, checkpoints, fault specs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medcl.data.task import Split, Task
from medcl.engine.checkpoint import (CorruptCheckpointError, SequenceState, latest_checkpoint, read_state,
                                     restore_checkpoint, write_checkpoint)
from medcl.engine.preprocess import to_model_input
from medcl.engine.sampling import StageSampler, sharded_rows
from medcl.faults import parse_fault


def _task(name: str, n: int, channels: int = 1, size: int = 8) -> Task:
    rng = np.random.default_rng(len(name))
    images = rng.integers(0, 255, size=(n, size, size, channels), dtype=np.uint8)
    labels = np.arange(n) % 2
    split = Split(images=images, labels=labels)
    return Task(name=name, classes=("a", "b"), class_prompts=(("a",), ("b",)), modality="x",
                splits={"train": split, "test": split})


def _all_rows(sampler: StageSampler, steps: int) -> list[np.ndarray]:
    return [images for images, _, _ in sampler.batches(steps)]


def test_batches_do_not_depend_on_worker_count():
    tasks = [_task("a", 50)]
    single = StageSampler(tasks, (0,), batch_size=8, seed=3, stage_index=0)
    shards = [StageSampler(tasks, (0,), batch_size=8, seed=3, stage_index=0, rank=r, world_size=2) for r in range(2)]
    for step, (full, (r0, _, _), (r1, _, _)) in enumerate(zip(single.batches(20), shards[0].batches(20), shards[1].batches(20))):
        assert len(r0) + len(r1) == len(full[0]) == 8
        np.testing.assert_array_equal(full[0][0::2], r0)
        np.testing.assert_array_equal(full[0][1::2], r1)


def test_every_sample_once_per_epoch_and_seed_changes_order():
    tasks = [_task("a", 40)]
    sampler = StageSampler(tasks, (0,), batch_size=10, seed=0, stage_index=0)
    seen = np.concatenate([images.reshape(10, -1) for images in _all_rows(sampler, 4)])
    assert len(np.unique(seen, axis=0)) == 40
    other = StageSampler(tasks, (0,), batch_size=10, seed=1, stage_index=0)
    assert not np.array_equal(_all_rows(sampler, 1)[0], _all_rows(other, 1)[0])


def test_one_sharded_permutation_scheme_with_the_seeds_it_always_had():
    """sharded_rows is the scheme of every sampler; StageSampler's batches are the ones its seeds
    gave before the scheme was shared (permutation per epoch from (seed, stage, epoch))."""
    n, batch = 10, 4
    permutation = lambda epoch: np.random.default_rng([5, 1, epoch]).permutation(n)  # noqa: E731
    steps = [sharded_rows(s, batch, n, permutation) for s in range(5)]
    assert sorted(np.concatenate(steps)[:n].tolist()) == list(range(n))  # a pass visits each row once
    expected = np.concatenate([permutation(0), permutation(1)])[4:8]  # step 1: positions 4..7, by hand
    np.testing.assert_array_equal(steps[1], expected)
    halves = [sharded_rows(3, batch, n, permutation, rank=r, world_size=2) for r in (0, 1)]
    np.testing.assert_array_equal(np.sort(np.concatenate(halves)), np.sort(steps[3]))
    tasks = [_task("a", n)]
    sampler = StageSampler(tasks, (0,), batch_size=batch, seed=5, stage_index=1)
    rows = [images for images, _, _ in sampler.batches(5)]
    for step in range(5):
        np.testing.assert_array_equal(rows[step], tasks[0].split("train").images[steps[step]])


def test_multi_task_stage_mixes_tasks_and_channels():
    tasks = [_task("a", 30, channels=1), _task("bb", 30, channels=3)]
    sampler = StageSampler(tasks, (0, 1), batch_size=32, seed=0, stage_index=0)
    images, labels, task_ids = next(sampler.batches(1))
    assert images.shape == (32, 8, 8, 3) and set(task_ids.tolist()) == {0, 1}
    assert sampler.steps_for(None, 2.0) == 4  # ceil(2 * 60 / 32)


def test_preprocess_grayscale_resize_and_normalise():
    images = np.full((2, 16, 16, 1), 255, dtype=np.uint8)
    x = to_model_input(images, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert x.shape == (2, 3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(np.zeros((2, 8, 8, 3), dtype=np.float32), 8, (0, 0, 0), (1, 1, 1))


def _state() -> SequenceState:
    return SequenceState(task_names=["a", "b"], stage_names=["a", "b"], zero_shot=[20.0, 30.0], rows=[[90.0, 35.0]],
                         wall_time_s=[1.0], steps=[5], trainable_parameters=[10])


def test_checkpoint_round_trip_and_corruption_is_named(tmp_path):
    model = torch.nn.Linear(3, 2)
    directory = tmp_path / "task-1"
    write_checkpoint(directory, rank=0, state=_state(), model=model, strategy_state={"buffer": torch.arange(4)})
    other = torch.nn.Linear(3, 2)
    state, strategy_state = restore_checkpoint(directory, rank=0, model=other)
    assert state.rows == [[90.0, 35.0]] and torch.equal(strategy_state["buffer"], torch.arange(4))
    torch.testing.assert_close(other.weight, model.weight)
    assert latest_checkpoint(tmp_path) == directory
    data = bytearray((directory / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (directory / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        restore_checkpoint(directory, rank=0, model=other)


def test_incomplete_checkpoint_is_not_the_latest(tmp_path):
    write_checkpoint(tmp_path / "task-1", rank=0, state=_state(), model=None, strategy_state={})
    (tmp_path / "task-2").mkdir()
    (tmp_path / "task-2" / "state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "task-1"
    assert read_state(tmp_path / "task-1").zero_shot == [20.0, 30.0]


def test_fault_spec_parsing():
    assert parse_fault("step=5,stage=2,rank=1") == {"step": 5, "stage": 2, "rank": 1}
    with pytest.raises(ValueError, match="after_stage=N"):
        parse_fault("explode=1")


def test_outputs_for_a_full_sequence_and_for_a_joint_style_plan(tmp_path):
    import json

    from medcl.engine.outputs import write_outputs
    from medcl.rundir import RunDir, read_matrix_csv

    run = RunDir(tmp_path)
    full = SequenceState(task_names=["a", "b"], stage_names=["a", "b"], zero_shot=[20.0, 30.0],
                         rows=[[90.0, 35.0], [70.0, 80.0]], wall_time_s=[1.0, 2.0], steps=[5, 5],
                         trainable_parameters=[10, 10])
    metrics = write_outputs(run, full, strategy="finetune", model="m", benchmark="b")
    assert metrics["last"] == 75.0 and metrics["bwt"] == -20.0 and metrics["transfer"] == 35.0
    labels, tasks, values = read_matrix_csv(run.matrix)
    assert labels == ["zero_shot", "a", "b"] and values[2, 1] == 80.0
    joint = SequenceState(task_names=["a", "b"], stage_names=["joint"], zero_shot=[20.0, 30.0], rows=[[88.0, 84.0]])
    metrics = write_outputs(run, joint, strategy="joint", model="m", benchmark="b")
    assert metrics["last"] == 86.0 and metrics["bwt"] is None and "one stage per task" in metrics["note"]
    assert json.loads(run.metrics.read_text())["note"] == metrics["note"]


def test_resume_refuses_a_changed_experiment_but_not_a_cosmetic_change():
    from medcl.engine.runner import RESUMABLE_CHANGES, _diff

    old = {"train": {"lr": 0.1, "log_every": None}, "seed": 0}
    assert _diff(old, {"train": {"lr": 0.2, "log_every": None}, "seed": 0}) == {"train.lr"}
    assert _diff(old, {"train": {"lr": 0.1, "log_every": 5}, "seed": 0}) <= RESUMABLE_CHANGES
