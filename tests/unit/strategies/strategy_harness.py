"""The unit-level strategy harness: a strategy's hooks run as the engine runs them, without Ray.

A tiny CLIP (seed 0) and a small synthmed sequence; :func:`train_stage` is one stage of
``medcl.engine.loop`` (``before_stage``, an optimiser over ``trainable_parameters``, ``loss``,
``after_step``, ``after_stage``) and :func:`eval_logits` is evaluation through ``eval_model``.
A few seconds per strategy on one CPU thread.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch

from medcl.config import TrainSection
from medcl.data.synthmed import SynthMed
from medcl.engine.context import TrainContext
from medcl.engine.preprocess import to_model_input
from medcl.models import clip_logits, create_model
from medcl.models.norm import eval_mode
from medcl.strategies import Strategy


@functools.lru_cache(maxsize=None)
def _bundle(model_name: str):
    torch.manual_seed(0)
    return create_model(model_name)


@functools.lru_cache(maxsize=None)
def synthmed_tasks(num_tasks: int = 3):
    return tuple(SynthMed().build({"num_tasks": num_tasks, "train_per_class": 4, "val_per_class": 1,
                                   "test_per_class": 2}, seed=0))


def make_ctx(strategy: Strategy, tasks, model_name: str = "medcl-tiny") -> TrainContext:
    """A fresh copy of the seed-0 model (the same base every time, as a restarted worker builds it),
    with the strategy's own stages."""
    bundle = _bundle(model_name)
    tasks = list(tasks)
    return TrainContext(model=copy.deepcopy(bundle.model), tokenizer=bundle.tokenizer, tasks=tasks,
                        stages=strategy.stages(tasks), device=torch.device("cpu"),
                        preprocess=lambda images: to_model_input(images, bundle.image_size, bundle.mean, bundle.std),
                        train=TrainSection(batch_size=8, steps_per_task=2), total_steps=2)


def batch(ctx: TrainContext, task: int, n: int = 8, offset: int = 0):
    """``n`` training samples of ``task`` from ``offset`` (synthmed_tasks has 20 a task)."""
    split = ctx.tasks[task].split("train")
    if offset + n > len(split.labels):
        raise ValueError(f"rows {offset}..{offset + n} asked of a task with {len(split.labels)} training samples")
    rows = slice(offset, offset + n)
    return ctx.make_batch(split.images[rows], split.labels[rows], np.full(len(split.labels[rows]), task))


def train_stage(strategy: Strategy, ctx: TrainContext, stage_index: int, steps: int = 2,
                lr: float = 0.05) -> list[dict[str, float]]:
    """One stage as the engine runs it (SGD instead of AdamW); every step's loss terms. Step ``s``
    trains on samples ``4s .. 4s + 8`` of the stage's task (at most 4 steps on synthmed_tasks)."""
    ctx.stage_index = stage_index
    ctx.train_mode()
    strategy.before_stage(ctx)
    optimizer = torch.optim.SGD(list(strategy.trainable_parameters(ctx)), lr=lr)
    ctx.train_mode()
    terms = []
    for step in range(steps):
        ctx.step = step
        optimizer.zero_grad()
        out = strategy.loss(ctx, batch(ctx, ctx.task_index, offset=4 * step))
        out["loss"].backward()
        optimizer.step()
        terms.append({k: float(v.detach()) for k, v in out.items()})
        ctx.step = step + 1
        strategy.after_step(ctx)
    strategy.after_stage(ctx)
    return terms


@torch.no_grad()
def eval_logits(strategy: Strategy, ctx: TrainContext) -> list[torch.Tensor]:
    """Every task's test logits through ``eval_model``, as the engine evaluates."""
    out = []
    for k, task in enumerate(ctx.tasks):
        with strategy.eval_model(ctx, k) as model, eval_mode(model):
            images = ctx.preprocess(task.split("test").images)
            out.append(clip_logits(model.encode_image(images, normalize=True), ctx.class_embeddings(k, model),
                                   model.logit_scale.exp()))
    return out
