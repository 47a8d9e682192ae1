"""Helpers several strategies share (a strategy imports from here, never from another strategy)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from medcl.models import ModelLoadError
from medcl.models.norm import teacher_copy


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


def distill_ce(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * CE(softmax(teacher / T), student / T), averaged over rows (soft-target cross-entropy; ZSCL's
    ``distillation`` in github.com/Thunderbeee/ZSCL ``mtil/src/models/helpers.py``)."""
    t = temperature
    return F.cross_entropy(student_logits.float() / t, F.softmax(teacher_logits.float() / t, dim=-1)) * t * t


def distill_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over rows."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=-1), F.log_softmax(teacher_logits.float() / t, dim=-1),
                    log_target=True, reduction="batchmean") * t * t


def concat(batches: list):
    """One :class:`~medcl.engine.context.Batch` with the rows of ``batches`` in order."""
    return dataclasses.replace(batches[0], **{field: torch.cat([getattr(b, field) for b in batches])
                                              for field in ("images", "labels", "task_ids")})


def earlier_task_heads(ctx) -> tuple[list[int], torch.nn.Module | None, dict[int, torch.Tensor]]:
    """For distillation on earlier tasks' heads (LwF, iCaRL), at the start of a stage: the tasks
    trained in earlier stages, a frozen copy of the model (None at the first stage) and, per earlier
    task, that copy's class-prompt embeddings."""
    old_tasks = sorted({k for stage in ctx.stages[: ctx.stage_index] for k in stage.train_tasks})
    teacher = teacher_copy(ctx.model) if old_tasks else None
    with torch.no_grad():
        heads = {k: ctx.class_embeddings(k, teacher) for k in old_tasks}
    return old_tasks, teacher, heads


def check_base_fingerprint(saved: str | None, current: str | None, adapters: str) -> None:
    """ModelLoadError when a checkpoint's frozen-base fingerprint differs from this run's base (the
    ``adapters`` were trained on another model)."""
    if saved is not None and current is not None and saved != current:
        raise ModelLoadError(
            f"the frozen base model differs from the one this run's {adapters} were trained on (fingerprint "
            f"{current}, checkpoint {saved}): were model.name, model.pretrained or seed changed? "
            "Restore them or start over with --fresh")
