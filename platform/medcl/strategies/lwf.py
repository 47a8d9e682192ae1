"""Learning without Forgetting (Li & Hoiem, 2016) on CLIP (docs/methods.md#3-baselines, "LwF").

``variant: mtil`` (default) is the LwF of the MTIL comparisons that ZSCL's and PRIMED's tables report,
as the authors of ZSCL ran it (github.com/Thunderbeee/ZSCL ``mtil/scripts/lwf.sh``: ``--method ZSCL
--image_loss --text_loss --ref-dataset <current task>`` with ``--ref-model <previous task's
checkpoint>``, no weight ensemble, no L2):

    L = CE_ls + lam * ( D(Z_prev, Z) + D(Z_prev^T, Z^T) )
    D(A, B) = T^2 * mean over rows r of CE( softmax(A_r / T), B_r / T )             (T = 2)
    Z = s * f(x) . G^T,  Z_prev = s * f_prev(x) . G^T

on the current batch x, with G the current task's class-prompt embeddings through the *previous*
model's text tower (the reference texts are the current task's prompts, embedded by the reference
model) and s the previous model's logit scale. The previous model is a frozen copy taken in
``before_stage``; for the first task it is the starting (zero-shot) model, as in lwf.sh, whose first
task runs with no ``--ref-model``. Only the image tower of the model being trained is distilled.

``variant: old_heads`` is the class-incremental reading of Li & Hoiem with CLIP heads (medcl's
earlier default): the tasks K trained in earlier stages are the "old heads",

    L = CE_ls + lam * (1 / |K|) * sum over k in K of T^2 * KL( softmax(z_k^prev(x) / T) || softmax(z_k(x) / T) )

z_k(x) = logit_scale * f(x) . g(prompts of task k) from each model's own towers; the first stage
has no old task (plain CE).

Teachers are :func:`medcl.models.norm.teacher_copy` (``requires_grad=False``, never in the optimiser,
BatchNorm normalising as the student's without updating statistics). After a restart the engine
restores the previous task's weights before ``before_stage``, so the teacher is rebuilt and no state
is saved.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from medcl.models import clip_logits
from medcl.models.norm import teacher_copy
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import distill_ce, distill_kl, earlier_task_heads


@register_strategy("lwf")
class LwF(Strategy):
    description = "fine-tuning + distillation to the previous model on the current data (MTIL LwF)"

    class Params(StrategyParams):
        variant: Literal["mtil", "old_heads"] = Field("mtil", description="the MTIL LwF of ZSCL's lwf.sh (current "
                                                      "task's prompts, previous model), or KL on earlier tasks' heads")
        lam: float = Field(1.0, ge=0, description="weight of the distillation term (lwf.sh: 1)")
        temperature: float = Field(2.0, gt=0, description="softmax temperature T (ZSCL's --T 2)")

    def before_stage(self, ctx) -> None:
        if self.params.variant == "mtil":
            self.teacher = teacher_copy(ctx.model)
            with torch.no_grad():
                self.prompts = {k: ctx.class_embeddings(k, self.teacher) for k in ctx.stage.train_tasks}
        else:
            self.old_tasks, self.teacher, self.old_heads = earlier_task_heads(ctx)

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        features = ctx.model.encode_image(batch.images, normalize=True)
        ce = ctx.task_loss(batch, image_features=features)
        if self.teacher is None:
            return {"loss": ce, "ce": ce}
        with torch.no_grad():
            old_features = self.teacher.encode_image(batch.images, normalize=True)
        kd = self._mtil(batch, features, old_features) if self.params.variant == "mtil" else \
            self._old_heads(ctx, features, old_features)
        return {"loss": ce + self.params.lam * kd, "ce": ce, "distill": kd}

    def _mtil(self, batch, features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
        """D(Z_prev, Z) + D(Z_prev^T, Z^T) per task of the batch, weighted by its share of the rows."""
        scale, t, total = self.teacher.logit_scale.detach().exp(), self.params.temperature, 0.0
        for k, prompts in self.prompts.items():
            rows = batch.task_ids == k
            if not rows.any():
                continue
            z, z_prev = scale * features[rows] @ prompts.t(), scale * old_features[rows] @ prompts.t()
            total = total + (distill_ce(z_prev, z, t) + distill_ce(z_prev.t(), z.t(), t)) * rows.float().mean()
        return total

    def _old_heads(self, ctx, features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
        old_scale, scale = self.teacher.logit_scale.exp(), ctx.model.logit_scale.exp()
        return sum(distill_kl(clip_logits(old_features, self.old_heads[k], old_scale),
                              clip_logits(features, ctx.class_embeddings(k), scale), self.params.temperature)
                   for k in self.old_tasks) / len(self.old_tasks)

    def after_stage(self, ctx) -> None:
        self.teacher, self.old_heads, self.prompts = None, {}, {}
