"""The normalisation policy (medcl.models.norm): BatchNorm running statistics move only where the
policy allows, in the engine's helpers and in the strategies that take extra forward passes."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medcl.config import TrainSection, validate_experiment
from medcl.data.synthmed import SynthMed
from medcl.engine.context import TrainContext
from medcl.engine.preprocess import to_model_input
from medcl.models import create_model
from medcl.models.norm import (apply_train_mode, batch_norms, eval_mode, resolve_freeze_norm, running_statistics_kept,
                               sync_running_statistics, teacher_copy)
from medcl.strategies import build_strategy


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return create_model("medcl-tiny")  # ResNet towers: BatchNorm


@pytest.fixture(scope="module")
def tasks():
    return SynthMed().build({"num_tasks": 2, "train_per_class": 4, "val_per_class": 1, "test_per_class": 2}, seed=0)


def make_ctx(bundle, tasks, *, freeze_norm: bool) -> TrainContext:
    return TrainContext(model=copy.deepcopy(bundle.model), tokenizer=bundle.tokenizer, tasks=tasks,
                        stages=build_strategy("finetune").stages(tasks), device=torch.device("cpu"),
                        preprocess=lambda images: to_model_input(images, bundle.image_size, bundle.mean, bundle.std),
                        train=TrainSection(batch_size=8, steps_per_task=4), total_steps=4,
                        freeze_norm=freeze_norm)


def running_stats(model) -> list[torch.Tensor]:
    return [t.clone() for m in batch_norms(model) for t in (m.running_mean, m.running_var, m.num_batches_tracked)]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def images(ctx, task: int = 0, n: int = 8) -> torch.Tensor:
    return ctx.preprocess(ctx.tasks[task].split("train").images[:n])


def test_default_freezes_statistics_only_when_weights_are_loaded():
    assert resolve_freeze_norm(None, "runs/x/model.safetensors") is True
    assert resolve_freeze_norm(None, None) is False
    assert resolve_freeze_norm(False, "w.safetensors") is False and resolve_freeze_norm(True, None) is True
    config = validate_experiment({"name": "x", "model": {"name": "medcl-tiny", "freeze_norm": True}})
    assert config.model.freeze_norm is True


def test_frozen_norm_keeps_running_statistics_while_training(bundle, tasks):
    ctx = make_ctx(bundle, tasks, freeze_norm=True)
    ctx.train_mode()
    assert ctx.model.training and all(not m.training for m in batch_norms(ctx.model))
    before = running_stats(ctx.model)
    ctx.model.encode_image(images(ctx))
    assert_same(before, running_stats(ctx.model))
    free = make_ctx(bundle, tasks, freeze_norm=False)
    free.train_mode()
    free.model.encode_image(images(free))
    assert not torch.equal(before[0], running_stats(free.model)[0]), "unfrozen statistics do move"


def test_batch_norm_of_a_frozen_base_is_frozen_too(bundle):
    model = copy.deepcopy(bundle.model).requires_grad_(False)  # a LoRA base: nothing of it trains
    apply_train_mode(model, freeze_norm=False)
    assert all(not m.training for m in batch_norms(model))
    model.visual.requires_grad_(True)
    apply_train_mode(model, freeze_norm=False)
    assert all(m.training for m in batch_norms(model.visual))


def test_eval_mode_restores_each_module_flag(bundle):
    model = copy.deepcopy(bundle.model)
    apply_train_mode(model, freeze_norm=True)
    flags = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == flags, "frozen BatchNorm stays frozen after evaluation"


def test_reference_passes_leave_running_statistics_and_use_batch_statistics(bundle, tasks):
    ctx = make_ctx(bundle, tasks, freeze_norm=False)
    ctx.train_mode()
    x = images(ctx)
    before = running_stats(ctx.model)
    with running_statistics_kept(ctx.model):
        kept = ctx.model.encode_image(x)
    assert_same(before, running_stats(ctx.model))
    plain = ctx.model.encode_image(x)  # same batch statistics, now updating the buffers
    torch.testing.assert_close(kept, plain)
    assert not torch.equal(before[0], running_stats(ctx.model)[0])


@pytest.mark.parametrize("freeze_norm", [True, False])
def test_teacher_is_the_student_function_and_never_moves_statistics(bundle, tasks, freeze_norm):
    ctx = make_ctx(bundle, tasks, freeze_norm=freeze_norm)
    ctx.train_mode()
    teacher = teacher_copy(ctx.model)
    assert not any(p.requires_grad for p in teacher.parameters())
    x = images(ctx)
    before = running_stats(teacher)
    with torch.no_grad(), running_statistics_kept(ctx.model):
        torch.testing.assert_close(teacher.encode_image(x), ctx.model.encode_image(x))
    assert_same(before, running_stats(teacher))


def test_zscl_reference_pass_does_not_move_the_students_statistics(bundle, tasks):
    ctx = make_ctx(bundle, tasks, freeze_norm=False)
    ctx.train_mode()
    strategy = build_strategy("zscl", {"reference": {"name": "synthmed", "domains": ["ct"], "per_class": 1}})
    strategy.setup(ctx)
    strategy.before_stage(ctx)
    split = tasks[0].split("train")
    batch = ctx.make_batch(split.images[:8], split.labels[:8], np.zeros(8, dtype=int))
    alone = copy.deepcopy(ctx.model)
    ctx.task_loss(batch, model=alone)  # what the task batch alone does to the statistics
    strategy.loss(ctx, batch)
    assert_same(running_stats(alone), running_stats(ctx.model))


def test_zscl_ensemble_averages_running_statistics_with_the_weights(bundle, tasks):
    ctx = make_ctx(bundle, tasks, freeze_norm=False)
    strategy = build_strategy("zscl", {"reference": {"name": "synthmed", "domains": ["ct"], "per_class": 1},
                                       "ensemble_period": 0.5})
    strategy.setup(ctx)
    norm = batch_norms(ctx.model)[0]
    start = norm.running_mean.clone()
    strategy.before_stage(ctx)  # 4 steps, a snapshot every 2
    for step, delta in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]:
        norm.running_mean.add_(delta)
        ctx.step = step
        strategy.after_step(ctx)
    strategy.after_stage(ctx)
    # snapshots: start, step 2 (+3), step 4 (+15): mean shift 18 / 3
    torch.testing.assert_close(norm.running_mean, start + 6.0)


def _sync_worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    model[0].running_mean.fill_(float(rank) * 2)  # ranks 0 and 2: mean 1
    model[0].running_var.fill_(1.0 + rank)        # 1 and 2: mean 1.5
    sync_running_statistics(model, 2)
    results[rank] = (model[0].running_mean.tolist(), model[0].running_var.tolist())
    dist.destroy_process_group()


def test_running_statistics_are_averaged_over_workers(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_sync_worker, args=(str(tmp_path / "rendezvous"), results), nprocs=2)
    assert results[0] == results[1] == ([1.0] * 3, [1.5] * 3)
