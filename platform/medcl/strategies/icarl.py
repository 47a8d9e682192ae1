"""iCaRL (Rebuffi et al., "iCaRL: Incremental Classifier and Representation Learning", CVPR 2017)
with CLIP heads (docs/methods.md#3-baselines, "iCaRL").

Training task t: B is the current batch, R a replay batch of exemplars of earlier tasks drawn
without replacement, |R| = round(|B| f / (1 - f)) (f = ``replay_fraction``), and

    L = CE_ls over B + R (each sample over its own task's classes, the MTIL loss)
        + lam * (1 / |K|) * sum over k in K of T^2 * KL( softmax(z_k^start(x) / T) || softmax(z_k(x) / T) )

averaged over x in B + R, with K the tasks trained in earlier stages, z_k(x) = logit_scale * f(x) .
g(prompts of task k) from the model being trained and z_k^start the same from a frozen copy taken
in ``before_stage`` (the model at the start of the task, as iCaRL's "network before the update").
At the first step of a task the copy equals the model, so the distillation term starts at 0.

Distillation is the KL of temperature-softened softmaxes over each old task's classes, not iCaRL's
sigmoid/BCE on every old output: iCaRL's network has independent sigmoid outputs trained with BCE,
so BCE is its matching distillation; CLIP's head here is a softmax over a task's class prompts
trained with cross-entropy (the MTIL protocol), whose matching distillation is the softmax KL (as
in LwF, which iCaRL's term derives from). Sigmoids of scaled cosines would distil numbers the task
loss never shapes.

Exemplars (:mod:`medcl.strategies.exemplars`): after each task, ``buffer_size`` exemplars in all,
floor(buffer_size / classes seen) per class, old classes cut to their first m, each new class
herded on the normalised image features of the model after the task. Every rank holds the same
memory (features all-gathered before herding); replay batches are drawn per rank (``ctx.rng``, the
rank's own rows of the global batch). The memory is the strategy state (indices, identical on every
rank); ``exemplars`` and ``exemplar_bytes`` (uint8 pixels the exemplars stand for) go to metrics.json.

Classification (``classifier``): iCaRL's nearest-mean-of-exemplars rule, mapped onto CLIP's head,
replaces the class prompts' text embeddings by the normalised means of the exemplars' normalised
image features under the model being evaluated: logit_c = logit_scale * cos(f(x), mu_c), so the
arg-max is iCaRL's arg-min ||f(x) - mu_c|| on normalised features (iCaRL normalises its means too).

* ``nme`` (default: iCaRL's own classifier, Rebuffi et al. 2017, Algorithm 1 "iCaRL classify"): a
  task whose every class has an exemplar is classified by exemplar means; the others (tasks not
  trained yet, which have no exemplars, so Transfer stays the zero-shot reading; classes left without
  an exemplar when buffer_size < classes seen) fall back to the class prompts.
* ``text``: every task is classified by its class prompts, like every other method here, so the
  matrix compares training methods with one head.
"""
from __future__ import annotations

import contextlib
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from medcl.models import clip_logits
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import concat, distill_kl, earlier_task_heads
from medcl.strategies.exemplars import ExemplarMemory, task_features


class NMEHead(torch.nn.Module):
    """``model`` with its text head replaced by exemplar means: ``encode_image`` and ``logit_scale``
    are the model's; ``encode_text`` returns, for the tokens of a prompt of class c of the task it
    was built for, mu_c (so the engine's prompt-based evaluation computes NME logits)."""

    def __init__(self, model: torch.nn.Module, tokenizer, class_prompts, means: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("means", means)
        self.lookup: dict[tuple[int, ...], int] = {}
        for c, prompts in enumerate(class_prompts):
            for row in tokenizer([str(p) for p in prompts]).tolist():
                if self.lookup.setdefault(tuple(row), c) != c:
                    raise ValueError(f"two classes share the prompt tokens {row[:8]}...: NME cannot tell them apart")

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        rows = [self.lookup[tuple(row)] for row in tokens.tolist()]
        return self.means[torch.tensor(rows, device=self.means.device)]


@register_strategy("icarl")
class ICaRL(Strategy):
    description = "exemplar rehearsal (herding, class-balanced budget) + KL distillation to the task's start model"

    class Params(StrategyParams):
        buffer_size: int = Field(500, ge=0, description="exemplars kept in all, shared by every class seen so far")
        replay_fraction: float = Field(0.5, ge=0, lt=1, description="share of exemplars in each combined batch")
        lam: float = Field(1.0, ge=0, description="weight of the distillation term")
        temperature: float = Field(2.0, gt=0, description="softmax temperature T of the distillation")
        classifier: Literal["text", "nme"] = Field("nme", description="evaluation head: nearest mean of exemplars "
                                                   "where every class has one (iCaRL's rule), or class prompts")

    def __init__(self, params=None):
        super().__init__(params)
        self.memory = ExemplarMemory(self.params.buffer_size)
        self.teacher, self.old_tasks, self.old_heads = None, [], {}

    def before_stage(self, ctx) -> None:
        self.old_tasks, self.teacher, self.old_heads = earlier_task_heads(ctx)

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        f = self.params.replay_fraction
        n = round(len(batch) * f / (1 - f))
        if n and len(self.memory):
            batch = concat([batch, self.memory.batch(ctx, n, ctx.rng("replay", ctx.step))])
        features = ctx.model.encode_image(batch.images, normalize=True)
        ce = ctx.task_loss(batch, image_features=features)
        if self.teacher is None:
            return {"loss": ce, "ce": ce}
        kd = self.distillation(ctx, batch, features)
        return {"loss": ce + self.params.lam * kd, "ce": ce, "distill": kd}

    def distillation(self, ctx, batch, features: torch.Tensor) -> torch.Tensor:
        """(1/|K|) sum_k T^2 KL(start model || model) over task k's classes, on every row of ``batch``."""
        with torch.no_grad():
            old_features = self.teacher.encode_image(batch.images, normalize=True)
        old_scale, scale = self.teacher.logit_scale.exp(), ctx.model.logit_scale.exp()
        return sum(distill_kl(clip_logits(old_features, self.old_heads[k], old_scale),
                              clip_logits(features, ctx.class_embeddings(k), scale), self.params.temperature)
                   for k in self.old_tasks) / len(self.old_tasks)

    def after_stage(self, ctx) -> None:
        self.teacher, self.old_heads = None, {}
        for task in ctx.stage.train_tasks:
            features = task_features(ctx, ctx.model, task)
            self.memory.add_task(task, np.asarray(ctx.tasks[task].split("train").labels), features)

    @contextlib.contextmanager
    def eval_model(self, ctx, task_index: int):
        means = self.memory.class_means(ctx, ctx.model, task_index) if self.params.classifier == "nme" else None
        if means is None:
            yield ctx.model
        else:
            yield NMEHead(ctx.model, ctx.tokenizer, ctx.tasks[task_index].class_prompts, means)

    def extra_metrics(self, ctx) -> dict[str, float]:
        return {"exemplars": len(self.memory), "exemplar_bytes": self.memory.nbytes(ctx)}

    def state_dict(self) -> dict:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.memory.load_state_dict(state["memory"])
