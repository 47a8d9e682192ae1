"""ZSCL: zero-shot continual learning (Zheng et al., ICCV 2023; docs/methods.md#3-baselines, "ZSCL").

    L = CE_ls + w_img * D(Z_ref, Z) + w_txt * D(Z_ref^T, Z^T) + lam_l2 * sum_i (theta_i - theta_start_i)^2
    D(A, B) = T^2 * mean over rows r of CE( softmax(A_r / T), B_r / T )             (T = 2)

Defaults follow the authors' MTIL code (github.com/Thunderbeee/ZSCL, ``mtil/src/models/finetune.py``
and ``mtil/scripts/ZSCL.sh``): ``--image_loss --text_loss --T 2 --we --avg_freq 100 --l2 1``
with ``--iterations 1000``, reference images from a fixed set and reference texts a fixed caption
set (``--ref-sentences conceptual_captions``).

``text_features`` (how the caption side of Z is formed):

* ``teacher_captions`` (default, the authors' ``finetune.py`` lines 248-268): every distinct caption
  of the reference set is embedded *once* by the frozen teacher's text tower, G (N, d); per step
  R reference images are drawn and Z = s * f(images) . G^T, Z_ref = s * f_ref(images) . G^T are
  (R, N); the transposed term distils, per caption, the distribution over the R images. Only the
  image tower of the model being trained is held by the distillation (its text tower by L2 and the
  weight ensemble). s = exp(logit_scale) of the teacher (the authors freeze the logit scale, so
  theirs is the starting model's too).
* ``student_pairs`` (medcl's earlier variant): Z = s * f(images) . g(captions)^T over the R drawn
  pairs through *both* towers of the model being trained, (R, R).

The teacher is the starting model (the authors' ``ref_model`` is the zero-shot CLIP for every task:
ZSCL.sh passes no ``--ref-model``), a frozen copy taken in ``setup`` before any checkpoint is
restored, so it is never saved. theta_start is the model at the start of the task (the authors'
``l2_model``: a copy at the start of each task's invocation); the L2 term is the plain sum of
squares over the trainable parameters (their ``l2_loss``: ``mse_loss(..., reduction="sum")``), with
the authors' weight 1.

Weight ensemble: every ``P = max(1, round(ensemble_period * S))`` steps of a task of S steps (ZSCL:
every 100 of 1,000 iterations, period 0.1) and after its last step,
theta_avg <- theta_avg + (theta - theta_avg) / (n + 1), starting from theta_avg = theta_start
(n = 1); at the end of the task theta_avg replaces the weights (the average is what is kept).
theta covers every floating tensor of the state dict, so BatchNorm running statistics are averaged
with the weights they belong to (:mod:`medcl.models.norm`).

Normalisation: the teacher is :func:`medcl.models.norm.teacher_copy` of the starting model and the
student's reference pass runs inside :func:`medcl.models.norm.running_statistics_kept`, so
reference images of other domains never move the running statistics the tasks are evaluated with.
"""
from __future__ import annotations

import numpy as np
import torch
from typing import Literal

from pydantic import Field

from medcl.data.reference import ReferenceConfig
from medcl.models.norm import floating_state, running_statistics_kept, teacher_copy
from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import distill_ce, l2_penalty, snapshot


def pair_logits(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(R, R) logits: logit_scale * cos(image r, caption c)."""
    image = model.encode_image(images, normalize=True)
    text = model.encode_text(tokens, normalize=True)
    return model.logit_scale.exp() * image @ text.t()


@register_strategy("zscl")
class ZSCL(Strategy):
    description = "distillation to the starting model on reference image-text pairs + L2 + weight ensemble"

    class Params(StrategyParams):
        reference: ReferenceConfig = Field(default_factory=ReferenceConfig, description="reference pairs' source")
        reference_batch_size: int = Field(32, ge=2, description="reference pairs per step (per worker)")
        temperature: float = Field(2.0, gt=0)
        image_weight: float = Field(1.0, ge=0, description="weight of the image-to-text term")
        text_weight: float = Field(1.0, ge=0, description="weight of the text-to-image (transposed) term")
        l2: float = Field(1.0, ge=0, description="weight of ||theta - theta_task_start||^2 (0: off; ZSCL.sh: --l2 1)")
        text_features: Literal["teacher_captions", "student_pairs"] = Field(
            "teacher_captions", description="caption side of the distilled logits: every distinct reference caption "
            "through the frozen teacher's text tower (the authors' code), or the drawn pairs through the student's")
        ensemble_period: float = Field(0.1, ge=0, le=1, description="weight-ensemble snapshot period as a fraction "
                                       "of the task's steps (ZSCL: 100 of 1,000 iterations = 0.1; 0: off)")

    def setup(self, ctx) -> None:
        self.teacher = teacher_copy(ctx.model)
        self.reference = self.params.reference.load()
        self.tokens = ctx.tokenizer(list(self.reference.captions))
        self.caption_features = None
        if self.params.text_features == "teacher_captions":
            captions = sorted(set(self.reference.captions))
            with torch.no_grad():
                self.caption_features = self.teacher.encode_text(ctx.tokenizer(captions).to(ctx.device), normalize=True)

    def before_stage(self, ctx) -> None:
        self.anchor = snapshot(ctx.model) if self.params.l2 else {}
        self.average, self.snapshots = floating_state(ctx.model), 1
        period = self.params.ensemble_period
        self.every = max(1, round(period * ctx.total_steps)) if period else 0

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        ce = ctx.task_loss(batch)
        rng = ctx.rng("reference", ctx.step)
        size = min(self.params.reference_batch_size, len(self.reference))
        rows = np.sort(rng.choice(len(self.reference), size, replace=False))
        images = ctx.preprocess(self.reference.images[rows])
        z, z_ref = self._reference_logits(ctx, images, rows)
        image_term = distill_ce(z_ref, z, self.params.temperature)
        text_term = distill_ce(z_ref.t(), z.t(), self.params.temperature)
        loss = ce + self.params.image_weight * image_term + self.params.text_weight * text_term
        terms = {"ce": ce, "distill_image": image_term, "distill_text": text_term}
        if self.params.l2:
            terms["l2"] = l2_penalty(ctx.model, self.anchor)
            loss = loss + self.params.l2 * terms["l2"]
        return {"loss": loss, **terms}

    def _reference_logits(self, ctx, images: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z, Z_ref) of the drawn reference images: (R, N) against the teacher's caption features, or
        (R, R) over the drawn pairs through each model's own towers (``text_features``)."""
        if self.caption_features is None:
            tokens = self.tokens[rows].to(ctx.device)
            with running_statistics_kept(ctx.model):
                z = pair_logits(ctx.model, images, tokens)
            with torch.no_grad():
                z_ref = pair_logits(self.teacher, images, tokens)
            return z, z_ref
        scale = self.teacher.logit_scale.detach().exp()
        with running_statistics_kept(ctx.model):
            z = scale * ctx.model.encode_image(images, normalize=True) @ self.caption_features.t()
        with torch.no_grad():
            z_ref = scale * self.teacher.encode_image(images, normalize=True) @ self.caption_features.t()
        return z, z_ref

    @torch.no_grad()
    def after_step(self, ctx) -> None:
        if self.every and (ctx.step % self.every == 0 or ctx.step == ctx.total_steps):
            self.snapshots += 1
            for name, tensor in ctx.model.state_dict().items():
                if name in self.average:
                    self.average[name] += (tensor.detach() - self.average[name]) / self.snapshots

    def stage_state_dict(self) -> dict:
        return {"average": dict(self.average), "snapshots": self.snapshots} if self.every else {}

    def load_stage_state_dict(self, state: dict) -> None:
        if self.every:
            self.average = {k: v.to(self.average[k].device) for k, v in state["average"].items()}
            self.snapshots = int(state["snapshots"])

    @torch.no_grad()
    def after_stage(self, ctx) -> None:
        if self.every:
            ctx.model.load_state_dict(self.average, strict=False)
        self.anchor, self.average = {}, {}
