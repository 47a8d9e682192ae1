"""Evaluation of every task's test split, sharded over workers.

a[t, j] = 100 * (number of test images of task j whose arg-max class is right) / (test size of j),
with logits over task j's own classes (MTIL protocol, docs/methods.md#1-evaluation-protocol); counts are all-reduced.

auc[t, j] = macro one-vs-rest AUC (percent, :func:`medcl.auc.macro_auc`) of the softmax of the same
logits: AUC is not a sum over shards, so each worker's probabilities are all-gathered and every
worker computes the same value. Workers take whole batches of ``batch_size`` rows in turn
(:mod:`medcl.engine.chunks`), so the gathered numbers are bitwise one process's, whatever the world size. Each task's split is
fetched in turn and released once evaluated, unless it was held already (:mod:`medcl.engine.taskrefs`).
"""
from __future__ import annotations

import numpy as np
import torch

from medcl.auc import macro_auc, softmax
from medcl.engine.context import TrainContext
from medcl.engine.chunks import gather_chunks, rank_chunks
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
        chunks = rank_chunks(len(data), batch_size, ctx.rank, ctx.world_size)
        with strategy.eval_model(ctx, k) as model, eval_mode(model):
            logits = _logits(ctx, model, task, data, chunks, image_size, mean, std)
        if fetched:
            release(task, split)  # one evaluated split held at a time (light tasks: medcl.engine.taskrefs)
        local = torch.from_numpy(softmax(logits)).to(ctx.device)
        probabilities = gather_chunks(local, len(data), batch_size, ctx.world_size).cpu().numpy()
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


def _logits(ctx, model, task, data, chunks, image_size, mean, std) -> np.ndarray:
    """Logits of this rank's ``chunks`` of ``data`` (each chunk one batch), rows in chunk order."""
    embeddings = encode_class_prompts(model, ctx.tokenizer, task.class_prompts, ctx.device)
    scale = model.logit_scale.exp()
    out = [np.zeros((0, len(task.classes)))]
    for idx in chunks:
        images = to_model_input(data.images[idx], image_size, mean, std, ctx.device)
        features = model.encode_image(images, normalize=True)
        out.append(clip_logits(features, embeddings, scale).float().cpu().numpy().astype(np.float64))
    return np.concatenate(out)


