"""Evaluation of every task's test split, sharded over workers (counts all-reduced).

a[t, j] = 100 * (number of test images of task j whose arg-max class is right) / (test size of j),
with logits over task j's own classes (MTIL protocol, METHODS.md section 1).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from medcl.engine.context import TrainContext
from medcl.engine.preprocess import to_model_input
from medcl.models import clip_logits, encode_class_prompts
from medcl.models.norm import eval_mode
from medcl.strategies.base import Strategy


@torch.no_grad()
def evaluate_all(ctx: TrainContext, strategy: Strategy, *, image_size: int, mean, std, batch_size: int,
                 split: str = "test") -> list[float]:
    """Accuracy (percent) of every task in ``ctx.tasks``, each with ``strategy.eval_model(ctx, k)``."""
    counts = torch.zeros(len(ctx.tasks), 2, dtype=torch.float64)
    for k, task in enumerate(ctx.tasks):
        data = task.split(split)
        rows = np.arange(ctx.rank, len(data), ctx.world_size)
        with strategy.eval_model(ctx, k) as model, eval_mode(model):
            counts[k, 0] = _count_correct(ctx, model, task, data, rows, image_size, mean, std, batch_size)
        counts[k, 1] = len(rows)
    if ctx.world_size > 1:
        reduced = counts.to(ctx.device)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        counts = reduced.cpu()
    return [float(100.0 * c / n) if n else float("nan") for c, n in counts.tolist()]


def _count_correct(ctx, model, task, data, rows, image_size, mean, std, batch_size) -> int:
    embeddings = encode_class_prompts(model, ctx.tokenizer, task.class_prompts, ctx.device)
    scale = model.logit_scale.exp()
    correct = 0
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        images = to_model_input(data.images[idx], image_size, mean, std, ctx.device)
        features = model.encode_image(images, normalize=True)
        pred = clip_logits(features, embeddings, scale).argmax(dim=1).cpu().numpy()
        correct += int((pred == data.labels[idx]).sum())
    return correct
