"""Learning without Forgetting (Li & Hoiem, 2016) with CLIP heads (docs/methods.md#3-baselines, "LwF").

    L = CE_ls + lam * (1 / |K|) * sum over k in K of
            T^2 * KL( softmax(z_k^prev(x) / T) || softmax(z_k(x) / T) )

on the current batch x, with K the tasks trained in earlier stages (their class prompts are the
"old heads"), z_k(x) = logit_scale * f(x) . g(prompts of task k) from the model being trained and
z_k^prev the same from the previous model: a frozen copy taken in ``before_stage``
(:func:`medcl.models.norm.teacher_copy`: ``requires_grad=False``, never in the optimiser, BatchNorm
normalising as the student's without updating statistics). The first stage has no old task: plain CE.
After a restart the engine restores the previous task's weights before ``before_stage``, so the
teacher is rebuilt and no state is saved.
"""
from __future__ import annotations

import torch
from pydantic import Field

from medcl.models import clip_logits
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import distill_kl, earlier_task_heads


@register_strategy("lwf")
class LwF(Strategy):
    description = "fine-tuning + KL to the previous model's logits on earlier tasks' heads (current data)"

    class Params(StrategyParams):
        lam: float = Field(1.0, ge=0, description="weight of the distillation term")
        temperature: float = Field(2.0, gt=0, description="softmax temperature T")

    def before_stage(self, ctx) -> None:
        self.old_tasks, self.teacher, self.old_heads = earlier_task_heads(ctx)

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        features = ctx.model.encode_image(batch.images, normalize=True)
        ce = ctx.task_loss(batch, image_features=features)
        if self.teacher is None:
            return {"loss": ce, "ce": ce}
        with torch.no_grad():
            old_features = self.teacher.encode_image(batch.images, normalize=True)
        old_scale, scale = self.teacher.logit_scale.exp(), ctx.model.logit_scale.exp()
        kd = sum(distill_kl(clip_logits(old_features, self.old_heads[k], old_scale),
                            clip_logits(features, ctx.class_embeddings(k), scale), self.params.temperature)
                 for k in self.old_tasks) / len(self.old_tasks)
        return {"loss": ce + self.params.lam * kd, "ce": ce, "distill": kd}

    def after_stage(self, ctx) -> None:
        self.teacher, self.old_heads = None, {}
