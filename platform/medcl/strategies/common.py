"""Helpers several strategies share (a strategy imports from here, never from another strategy)."""
from __future__ import annotations

import torch


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
