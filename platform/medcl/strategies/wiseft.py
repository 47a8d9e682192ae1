"""WiSE-FT between consecutive tasks (Wortsman et al., 2022; docs/methods.md#3-baselines, "WiSE-FT").

    after each task:  theta = (1 - w) * theta_prev + w * theta_new          (w = 0.8 by default)

w = 0.8 is the MTIL setting the PRIMED and ZSCL tables compare against: ZSCL's
``mtil/scripts/WiSE_finetune.sh`` (``--wise_merge --wise_ft_model n --wise_ft_alpha 0.8``) and
``mtil/src/models/finetune.py`` (``param = param * alpha + param_prev * (1 - alpha)``), in
github.com/Thunderbeee/ZSCL. The WiSE-FT paper itself reports a range of mixing coefficients; this
default is the continual-learning comparison's.

theta_prev is the model at the start of the task (for the first task: the starting model),
theta_new the model after training on it; every floating-point tensor of the state dict is
interpolated (parameters and batch-norm statistics). The interpolated model is the one evaluated,
checkpointed and trained on by the next task. theta_prev is rebuilt from the restored weights in
``before_stage`` after a restart, so no state is saved.
"""
from __future__ import annotations

import torch
from pydantic import Field

from medcl.strategies.base import Strategy, StrategyParams, register_strategy


@torch.no_grad()
def interpolate_(model: torch.nn.Module, previous: dict[str, torch.Tensor], weight: float) -> None:
    """In place: every floating tensor t of ``model.state_dict()`` becomes (1 - w) previous + w t."""
    for name, tensor in model.state_dict().items():
        if name in previous and tensor.is_floating_point():
            tensor.copy_(torch.lerp(previous[name].to(tensor), tensor, weight))


@register_strategy("wiseft")
class WiseFT(Strategy):
    description = "fine-tuning, then theta = (1-w) theta_prev + w theta_new after each task"

    class Params(StrategyParams):
        weight: float = Field(0.8, ge=0, le=1, description="w: the new weights' share of the interpolation "
                              "(ZSCL's WiSE_finetune.sh: --wise_ft_alpha 0.8)")

    def before_stage(self, ctx) -> None:
        self.previous = {name: t.detach().clone() for name, t in ctx.model.state_dict().items() if t.is_floating_point()}

    def after_stage(self, ctx) -> None:
        interpolate_(ctx.model, self.previous, self.params.weight)
        self.previous = {}
