"""L2 regularisation towards the weights at the start of each task (docs/methods.md#3-baselines, "L2").

    L = CE_ls + lam * sum over trainable parameters i of (theta_i - theta_start_i)^2

theta_start is snapshotted in ``before_task`` (for the first task: the starting model). After a
restart the engine restores the weights of the last finished task before ``before_task`` runs, so
the anchor is rebuilt and no state is saved.
"""
from __future__ import annotations

import torch
from pydantic import Field

from medcl.strategies.base import Strategy, StrategyParams, register_strategy


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the parameters that require grad, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def l2_penalty(model: torch.nn.Module, anchor: dict[str, torch.Tensor],
               weight: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """sum_i w_i (theta_i - anchor_i)^2 over the parameters named in ``anchor`` (w_i = 1 by default)."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for name, p in model.named_parameters():
        if name in anchor:
            squared = (p - anchor[name]) ** 2
            total = total + (squared if weight is None else weight[name] * squared).sum()
    return total


@register_strategy("l2")
class L2(Strategy):
    description = "fine-tuning + lam * ||theta - theta_task_start||^2"

    class Params(StrategyParams):
        lam: float = Field(0.01, ge=0, description="weight of the squared distance to the task's starting weights")

    def before_task(self, ctx) -> None:
        self.anchor = snapshot(ctx.model)

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        ce = ctx.task_loss(batch)
        reg = l2_penalty(ctx.model, self.anchor)
        return {"loss": ce + self.params.lam * reg, "ce": ce, "l2": reg}
