"""L2 regularisation towards the weights at the start of each task (docs/methods.md#3-baselines, "L2").

    L = CE_ls + lam * sum over trainable parameters i of (theta_i - theta_start_i)^2

theta_start is snapshotted in ``before_stage`` (for the first task: the starting model). After a
restart the engine restores the weights of the last finished task before ``before_stage`` runs, so
the anchor is rebuilt and no state is saved.

lam = 1 is the authors' setting of this baseline in the MTIL code (github.com/Thunderbeee/ZSCL,
``mtil/scripts/wc.sh``: ``--method finetune --l2 1``, "weight consistency"; the penalty is their
``l2_loss``, a plain sum of squared differences).
"""
from __future__ import annotations

import torch
from pydantic import Field

from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import l2_penalty, snapshot


@register_strategy("l2")
class L2(Strategy):
    description = "fine-tuning + lam * ||theta - theta_task_start||^2"

    class Params(StrategyParams):
        lam: float = Field(1.0, ge=0, description="weight of the squared distance to the task's starting weights "
                          "(ZSCL's wc.sh: --l2 1)")

    def before_stage(self, ctx) -> None:
        self.anchor = snapshot(ctx.model)

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        ce = ctx.task_loss(batch)
        reg = l2_penalty(ctx.model, self.anchor)
        return {"loss": ce + self.params.lam * reg, "ce": ce, "l2": reg}
