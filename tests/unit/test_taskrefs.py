"""Tasks by reference (medcl.engine.taskrefs): light to ship, fetched when used, released after.

The sampler and evaluation give the same batches and figures with light tasks as with plain ones,
and leave no split held once they are done with it.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from medcl.data.synthmed import SynthMed
from medcl.engine.sampling import StageSampler
from medcl.engine.taskrefs import RemoteSplits, put_tasks, release, split_size


@pytest.fixture(scope="module")
def tasks():
    return SynthMed().build({"num_tasks": 2, "train_per_class": 6, "val_per_class": 1, "test_per_class": 3}, seed=0)


def test_light_tasks_pickle_without_pixels_and_fetch_each_split_once(ray_session, tasks):
    light = put_tasks(tasks)
    pixels = sum(s.images.nbytes for t in tasks for s in t.splits.values())
    assert len(pickle.dumps(light)) < pixels / 4
    task = light[0]
    assert isinstance(task.splits, RemoteSplits) and task.splits.held() == ()
    assert "train" in task.splits and "nope" not in task.splits and task.splits.held() == ()
    assert split_size(task, "train") == len(tasks[0].split("train")) and task.splits.held() == ()
    train = task.split("train")
    np.testing.assert_array_equal(train.images, tasks[0].split("train").images)
    assert task.split("train") is train and task.splits.held() == ("train",)
    assert not train.images.flags.writeable  # a view of the object store, not a copy
    assert pickle.loads(pickle.dumps(task)).splits.held() == ()  # what is held never travels
    release(light, "train")
    assert task.splits.held() == ()
    release(tasks)  # plain tasks: nothing to do


def test_the_sampler_draws_the_same_batches_from_light_tasks(ray_session, tasks):
    light = put_tasks(tasks)
    plain = StageSampler(tasks, (0, 1), batch_size=8, seed=3, stage_index=1, rank=1, world_size=2)
    remote = StageSampler(light, (0, 1), batch_size=8, seed=3, stage_index=1, rank=1, world_size=2)
    for a, b in zip(plain.batches(4), remote.batches(4)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert all(t.splits.held() == ("train",) for t in light)
    release(light, "train")
    assert all(t.splits.held() == () for t in light)


def test_evaluation_of_light_tasks_matches_plain_ones_and_holds_nothing_after(ray_session, tasks):
    import torch

    from medcl.engine.context import TrainContext
    from medcl.engine.evaluate import evaluate_tasks
    from medcl.models import create_model
    from medcl.strategies import build_strategy

    torch.manual_seed(0)
    bundle = create_model("medcl-tiny")
    strategy = build_strategy("finetune")
    light = put_tasks(tasks)
    light[1].split("test")  # held before evaluation: evaluation leaves it held
    figures = []
    for sequence in (tasks, light):
        ctx = TrainContext(model=bundle.model, tokenizer=bundle.tokenizer, tasks=list(sequence),
                           stages=strategy.stages(sequence), device=torch.device("cpu"))
        figures.append(evaluate_tasks(ctx, strategy, image_size=bundle.image_size, mean=bundle.mean,
                                      std=bundle.std, batch_size=5))
    assert figures[0] == figures[1]
    assert light[0].splits.held() == () and light[1].splits.held() == ("test",)
