"""Normalisation policy: what happens to BatchNorm running statistics during continual training.

BatchNorm (the ResNet towers: ``medcl-tiny``, ``medcl-small``, RN50 CLIPs such as PMC-CLIP) keeps
running statistics (mean, variance) that the model is *evaluated* with. Fine-tuning on one imaging
domain in train mode replaces them with that domain's statistics, which silently breaks every
other domain (measured: every untrained task at chance after the first task). LayerNorm (ViTs such
as BiomedCLIP ViT-B/16, ``medcl-tiny-vit``) has no running statistics and is unaffected. The
policy, applied by the engine and the strategies:

1. ``model.freeze_norm`` (:func:`resolve_freeze_norm`; default: frozen when pretrained weights are
   loaded, trained from random init): frozen BatchNorm runs in eval mode while the model trains,
   normalising with the pretrained running statistics and never changing them (open_clip's
   ``freeze_batch_norm_2d`` semantics, without replacing modules). Its affine weights still train.
2. A BatchNorm whose parameters are all frozen (the base of LoRA strategies) is frozen as well
   (:func:`apply_train_mode`): a frozen base must not drift.
3. Teacher and reference passes never change running statistics: teachers come from
   :func:`teacher_copy` (BatchNorm mirrors the student's mode: running statistics when frozen,
   batch statistics without updates otherwise), and a student's extra forward passes on reference
   data run inside :func:`running_statistics_kept`.
4. Weight averaging (WiSE-FT, ZSCL's ensemble) averages the floating running statistics with the
   weights (:func:`floating_state`).
5. Running statistics stay identical across workers: :func:`sync_running_statistics` averages them
   over ranks at the end of every stage, before evaluation and checkpoint. Each rank's running
   statistic is an exponential moving average, a linear function of its batch statistics, so the
   mean of the ranks' averages equals the average of the ranks' mean batch statistics: the same
   result as averaging after every step, at one collective per stage.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from medcl.engine.optim import allreduce_mean


def batch_norms(model: torch.nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm module of ``model`` (1d/2d/3d, SyncBatchNorm)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def resolve_freeze_norm(freeze_norm: bool | None, pretrained: str | None) -> bool:
    """``model.freeze_norm``: True/False as given; None (default) freezes when weights are loaded."""
    return bool(pretrained) if freeze_norm is None else freeze_norm


def _is_frozen(module: _BatchNorm, freeze_norm: bool) -> bool:
    params = list(module.parameters())
    return freeze_norm or (bool(params) and not any(p.requires_grad for p in params))


def apply_train_mode(model: torch.nn.Module, *, freeze_norm: bool) -> None:
    """``model.train()``, then every frozen BatchNorm (rules 1 and 2 of the module doc) back to eval."""
    model.train()
    for module in batch_norms(model):
        if _is_frozen(module, freeze_norm):
            module.eval()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model.eval()`` inside; every module's own training flag restored afterwards (a plain
    ``model.train(was_training)`` would unfreeze frozen BatchNorm)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def running_statistics_kept(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """BatchNorm in train mode still normalises with the batch's statistics, but its running
    statistics (and ``num_batches_tracked``) are left exactly as they were: inside, every BatchNorm
    has ``track_running_stats`` off, which in train mode means batch statistics and no update (and
    changes nothing in eval mode, where frozen BatchNorm keeps using its running statistics)."""
    norms = [m for m in batch_norms(model) if m.training]
    saved = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m, tracked in zip(norms, saved):
            m.track_running_stats = tracked


def teacher_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen teacher: a deep copy in eval mode with ``requires_grad=False`` and no gradients,
    whose BatchNorm normalises as the student's does at this moment: a BatchNorm in train mode
    (statistics not frozen) uses the batch's statistics and never updates its buffers, one in
    eval mode uses its running statistics. At the start of a task teacher and student are then the
    same function (a distillation loss starts at 0)."""
    modes = {name: m.training for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    for p in teacher.parameters():
        p.grad = None
    for name, module in teacher.named_modules():
        if modes.get(name):
            module.train()
            module.track_running_stats = False  # batch statistics, buffers never updated
    return teacher


def floating_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every floating tensor of the state dict (weights and running statistics)."""
    return {name: t.detach().clone() for name, t in model.state_dict().items() if t.is_floating_point()}


@torch.no_grad()
def sync_running_statistics(model: torch.nn.Module, world_size: int) -> None:
    """Average every BatchNorm's floating buffers over the ranks (rule 5 of the module doc)."""
    if world_size == 1:
        return
    buffers = [b for m in batch_norms(model) for b in (m.running_mean, m.running_var) if b is not None]
    if not buffers:
        return
    allreduce_mean(buffers, world_size)  # the gradients' flat all-reduce, reused
