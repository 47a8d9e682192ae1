"""Evaluation of every task's test split, sharded over workers.

a[t, j] = 100 * (number of test images of task j whose arg-max class is right) / (test size of j),
with logits over task j's own classes (MTIL protocol, docs/methods.md#1-evaluation-protocol); counts are all-reduced.

auc[t, j] = macro one-vs-rest AUC (percent, :func:`medcl.auc.macro_auc`) of the softmax of the same
logits: AUC is not a sum over shards, so each worker's probabilities (rows ``rank::world``) are
all-gathered (padded to one length) and every worker computes the same value. Each task's split is
fetched in turn and released once evaluated, unless it was held already (:mod:`medcl.engine.taskrefs`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from medcl.auc import macro_auc, softmax
from medcl.engine.context import TrainContext
from medcl.engine.preprocess import to_model_input
from medcl.engine.taskrefs import RemoteSplits, release
from medcl.models import clip_logits, encode_class_prompts
from medcl.models.norm import eval_mode
from medcl.strategies.base import Strategy


@torch.no_grad()
def evaluate_all(ctx: TrainContext, strategy: Strategy, *, image_size: int, mean, std, batch_size: int,
                 split: str = "test") -> list[float]:
    """Accuracy (percent) of every task in ``ctx.tasks``, each with ``strategy.eval_model(ctx, k)``."""
    return evaluate_tasks(ctx, strategy, image_size=image_size, mean=mean, std=std, batch_size=batch_size,
                          split=split)[0]


@torch.no_grad()
def evaluate_tasks(ctx: TrainContext, strategy: Strategy, *, image_size: int, mean, std, batch_size: int,
                   split: str = "test") -> tuple[list[float], list[float]]:
    """``(accuracy, auc)``, percent, one value per task of ``ctx.tasks`` (NaN for an empty split;
    AUC NaN when no class has both positives and negatives)."""
    accuracy, auc = [], []
    for k, task in enumerate(ctx.tasks):
        fetched = not _held(task, split)
        data = task.split(split)
        rows = np.arange(ctx.rank, len(data), ctx.world_size)
        with strategy.eval_model(ctx, k) as model, eval_mode(model):
            logits = _logits(ctx, model, task, data, rows, image_size, mean, std, batch_size)
        if fetched:
            release(task, split)  # one evaluated split held at a time (light tasks: medcl.engine.taskrefs)
        probabilities = _gather_rows(ctx, softmax(logits), len(data), len(task.classes))
        if len(data) == 0:
            accuracy.append(float("nan"))
            auc.append(float("nan"))
            continue
        accuracy.append(float(100.0 * np.mean(probabilities.argmax(axis=1) == data.labels)))
        auc.append(macro_auc(probabilities, data.labels)[0])
    return accuracy, auc


def _held(task, split: str) -> bool:
    """True when ``task``'s ``split`` needs no fetch: a plain task, or a light one holding it already."""
    splits = task.splits
    return not isinstance(splits, RemoteSplits) or split in splits.held()


def _logits(ctx, model, task, data, rows, image_size, mean, std, batch_size) -> np.ndarray:
    embeddings = encode_class_prompts(model, ctx.tokenizer, task.class_prompts, ctx.device)
    scale = model.logit_scale.exp()
    out = np.zeros((len(rows), len(task.classes)), dtype=np.float64)
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        images = to_model_input(data.images[idx], image_size, mean, std, ctx.device)
        features = model.encode_image(images, normalize=True)
        out[start : start + len(idx)] = clip_logits(features, embeddings, scale).float().cpu().numpy()
    return out


def _gather_rows(ctx: TrainContext, local: np.ndarray, n: int, classes: int) -> np.ndarray:
    """The ``n x classes`` matrix whose rows ``r::world`` are worker ``r``'s ``local`` rows."""
    world = ctx.world_size
    if world == 1:
        return local
    width = -(-n // world)  # rows of the largest shard
    padded = torch.zeros(width, classes, dtype=torch.float64, device=ctx.device)
    padded[: len(local)] = torch.from_numpy(local).to(ctx.device)
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    full = np.zeros((n, classes), dtype=np.float64)
    for r, shard in enumerate(shards):
        count = len(range(r, n, world))
        full[r::world] = shard[:count].cpu().numpy()
    return full
