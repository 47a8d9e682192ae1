"""Elastic weight consolidation with a diagonal Fisher (METHODS.md section 3, "EWC").

    L = CE_ls + (lam / 2) * sum over stored tasks k of sum_i F_k,i (theta_i - theta*_k,i)^2

After each task, theta*_k is a copy of the weights and F_k the diagonal empirical Fisher of that
task's loss, estimated on ``fisher_batches`` of its training batches (``StageSampler``, the same
sharding as training) as the mean of squared gradients of the batch loss:

    F_i = (1 / B) * sum over batches b of (d CE_ls(b) / d theta_i)^2

Gradients are averaged over workers before squaring (the gradient of the global batch), so every
rank holds the same Fisher. ``online: true`` (default, online EWC) keeps a single term with
F = gamma * F_previous + F_task and theta* = the weights after the latest task; ``online: false``
keeps one (F_k, theta*_k) pair per task. Fisher and anchors are saved in the strategy state.
"""
from __future__ import annotations

import torch
from pydantic import Field

from medcl.engine.optim import sync_gradients
from medcl.engine.sampling import StageSampler
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.l2 import l2_penalty, snapshot


def estimate_fisher(ctx, num_batches: int) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of the current stage's tasks (see the module docstring)."""
    model = ctx.model
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    sampler = StageSampler(ctx.tasks, ctx.stage.train_tasks, batch_size=ctx.train_config.batch_size, seed=ctx.seed,
                           stage_index=ctx.stage_index, rank=ctx.rank, world_size=ctx.world_size)
    was_training = model.training
    model.eval()  # no batch-norm statistics updates while estimating
    for images, labels, task_ids in sampler.batches(num_batches):
        model.zero_grad(set_to_none=True)
        ctx.task_loss(ctx.make_batch(images, labels, task_ids)).backward()
        sync_gradients(list(params.values()), ctx.world_size)
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach() ** 2 / num_batches
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return fisher


@register_strategy("ewc")
class EWC(Strategy):
    description = "fine-tuning + (lam/2) * Fisher-weighted distance to earlier tasks' weights"

    class Params(StrategyParams):
        lam: float = Field(1000.0, ge=0, description="weight of the Fisher penalty")
        fisher_batches: int = Field(8, ge=1, description="training batches the Fisher is estimated on")
        online: bool = Field(True, description="one accumulated Fisher (online EWC) instead of one per task")
        gamma: float = Field(1.0, ge=0, le=1, description="online EWC: decay of the previous Fisher")

    def __init__(self, params=None):
        super().__init__(params)
        self.device = torch.device("cpu")
        self.fishers: list[dict[str, torch.Tensor]] = []
        self.anchors: list[dict[str, torch.Tensor]] = []

    def setup(self, ctx) -> None:
        self.device = ctx.device

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        ce = ctx.task_loss(batch)
        if not self.fishers:
            return {"loss": ce, "ce": ce}
        reg = sum(l2_penalty(ctx.model, anchor, fisher) for fisher, anchor in zip(self.fishers, self.anchors))
        return {"loss": ce + self.params.lam / 2 * reg, "ce": ce, "ewc": reg}

    def after_task(self, ctx) -> None:
        fisher = estimate_fisher(ctx, self.params.fisher_batches)
        if self.params.online and self.fishers:
            fisher = {name: self.params.gamma * self.fishers[0][name] + f for name, f in fisher.items()}
            self.fishers, self.anchors = [], []
        self.fishers.append(fisher)
        self.anchors.append(snapshot(ctx.model))

    def state_dict(self) -> dict:
        return {"fishers": self.fishers, "anchors": self.anchors}

    def load_state_dict(self, state: dict) -> None:
        self.fishers = [_to(term, self.device) for term in state.get("fishers", [])]
        self.anchors = [_to(term, self.device) for term in state.get("anchors", [])]


def _to(tensors: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {name: t.to(device) for name, t in tensors.items()}
