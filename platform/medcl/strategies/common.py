"""Helpers several strategies share (a strategy imports from here, never from another strategy)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


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


def distill_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over rows."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=-1), F.log_softmax(teacher_logits.float() / t, dim=-1),
                    log_target=True, reduction="batchmean") * t * t


def concat(batches: list):
    """One :class:`~medcl.engine.context.Batch` with the rows of ``batches`` in order."""
    return dataclasses.replace(batches[0], **{field: torch.cat([getattr(b, field) for b in batches])
                                              for field in ("images", "labels", "task_ids")})
