"""Elastic weight consolidation with a diagonal Fisher (docs/methods.md#3-baselines, "EWC").

    L = CE_ls + (lam / 2) * sum over stored tasks k of sum_i F_k,i (theta_i - theta*_k,i)^2

After each task, theta*_k is a copy of the weights and F_k the diagonal empirical Fisher of that
task's loss, estimated on N = ``fisher_samples`` of its training samples (one global batch of the
``StageSampler``, the same sharding as training) as the mean of squared *per-sample* gradients:

    F_i = (1 / N) * sum over samples n of (d CE_ls(x_n, y_n) / d theta_i)^2

(the square of a batch-mean gradient would be about 1/B of it). Each rank sums its own samples'
squares; the sums are averaged over workers (equal shares), so every rank holds the same Fisher.
The model is in eval mode meanwhile: no BatchNorm statistics move. ``online: false`` (default, the
original EWC of Kirkpatrick et al., PNAS 2017, eq. 3 and its multi-task extension: one penalty per
earlier task) keeps one (F_k, theta*_k) pair per task; ``online: true`` (online EWC, Schwarz et al.
2018, "Progress & Compress") keeps a single term with F = gamma * F_previous + F_task and theta* =
the weights after the latest task. Fisher and anchors are saved in the strategy state.

``lam`` has no published value for CLIP fine-tuning (Kirkpatrick et al. tune it per benchmark; none
of ZSCL's, MoE-Adapters' or PRIMED's released code ships an EWC run): 1000 is medcl's choice, a
parameter to tune with the same budget as the other methods (``medcl sweep``).
"""
from __future__ import annotations

import torch
from pydantic import Field

from medcl.engine.optim import sync_gradients
from medcl.engine.sampling import StageSampler
from medcl.models.norm import eval_mode
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import l2_penalty, snapshot


def estimate_fisher(ctx, num_samples: int) -> dict[str, torch.Tensor]:
    """Diagonal per-sample empirical Fisher of the current stage's tasks (see the module docstring)."""
    model = ctx.model
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    global_batch = max(num_samples, ctx.world_size) // ctx.world_size * ctx.world_size
    sampler = StageSampler(ctx.tasks, ctx.stage.train_tasks, batch_size=global_batch, seed=ctx.seed,
                           stage_index=ctx.stage_index, rank=ctx.rank, world_size=ctx.world_size)
    images, labels, task_ids = next(iter(sampler.batches(1)))
    with eval_mode(model):
        for n in range(len(labels)):
            model.zero_grad(set_to_none=True)
            ctx.task_loss(ctx.make_batch(images[n : n + 1], labels[n : n + 1], task_ids[n : n + 1])).backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2 / len(labels)
    for name, p in params.items():  # the ranks' means averaged: sync_gradients on the Fisher itself
        p.grad = fisher[name]
    sync_gradients(list(params.values()), ctx.world_size)
    model.zero_grad(set_to_none=True)
    return fisher


@register_strategy("ewc")
class EWC(Strategy):
    description = "fine-tuning + (lam/2) * Fisher-weighted distance to earlier tasks' weights"

    class Params(StrategyParams):
        lam: float = Field(1000.0, ge=0, description="weight of the Fisher penalty")
        fisher_samples: int = Field(64, ge=1, description="training samples the per-sample Fisher is estimated on")
        online: bool = Field(False, description="one accumulated Fisher (online EWC, Schwarz et al. 2018) instead of "
                             "one penalty per task (Kirkpatrick et al. 2017)")
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

    def after_stage(self, ctx) -> None:
        fisher = estimate_fisher(ctx, self.params.fisher_samples)
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
