"""Optimiser, learning-rate schedule, gradient averaging across workers, one clipped step."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

BUCKET_BYTES = 32 << 20
WARMUP_FRACTION = 0.1  # ZSCL's MTIL code: --warmup_length 100 of --iterations 1000


def build_optimizer(params: list[torch.nn.Parameter], train, total_steps: int):
    """AdamW over ``params`` (fresh for every stage) and a LambdaLR: linear warm-up over
    ``warmup_steps`` (None: ``round(WARMUP_FRACTION * total_steps)``), then constant or cosine decay
    to 0 at ``total_steps``."""
    if not params:
        raise ValueError("the strategy returned no trainable parameters for this stage")
    # The fused kernel is ~1.5x faster on CPU for the large token-embedding table of CLIP.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=fused)
    warmup = train.warmup_steps if train.warmup_steps is not None else round(WARMUP_FRACTION * total_steps)
    cosine = train.schedule == "cosine"

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimised_parameters(params, model: torch.nn.Module, logit_scale: str) -> list[torch.nn.Parameter]:
    """``params`` less the model's ``logit_scale`` when it is ``"frozen"`` (the MTIL code excludes it
    from the optimiser: ``exclude_params_name = ["logit_scale"]``)."""
    frozen = getattr(model, "logit_scale", None) if logit_scale == "frozen" else None
    return [p for p in params if p is not frozen]


def sync_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over workers (missing gradients count as zero), in
    flattened buckets of ~32 MiB so that a large model costs few collective calls."""
    if world_size == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket, size = [], 0
    for p in params:
        bucket.append(p.grad)
        size += p.grad.numel() * p.grad.element_size()
        if size >= BUCKET_BYTES:
            allreduce_mean(bucket, world_size)
            bucket, size = [], 0
    if bucket:
        allreduce_mean(bucket, world_size)


def allreduce_mean(grads: list[torch.Tensor], world_size: int) -> None:
    """In place: each tensor (one dtype for all) becomes its mean over workers, in one flat all-reduce."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def optimizer_step(optimizer, scheduler, params, grad_clip: float | None, scaler=None) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
