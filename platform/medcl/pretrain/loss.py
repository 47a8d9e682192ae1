"""InfoNCE over the global batch: open_clip's ``ClipLoss`` with features all-gathered with gradients.

With ``w`` workers each holding ``B/w`` pairs, every rank gathers all ``B`` image and text features
(``torch.distributed.nn.all_gather``, which passes gradients back) and computes the same loss

    L = ( CE(s * I T^T, arange(B)) + CE(s * T I^T, arange(B)) ) / 2

over the global ``B x B`` logits (I, T: L2-normalised features, s = exp(logit_scale)). The
backward of the gather sums every rank's gradient into each local feature, so rank ``r``'s
gradient is ``w * dL/dtheta_r`` for its own samples; the engine's ``sync_gradients`` (a mean over
ranks, DDP's arithmetic) then leaves every rank with exactly ``dL/dtheta`` of the single-process
loss on the same global batch (logit_scale, which is not gathered, gets ``dL/ds`` on every rank and
keeps it under the mean). ``tests/unit/test_pretrain_loss.py`` checks both the loss and the synced
gradients against one process.
"""
from __future__ import annotations

import math

import torch
from open_clip.loss import ClipLoss

MAX_LOGIT_SCALE = math.log(100.0)  # open_clip's clamp: the temperature never drops below 0.01


def global_clip_loss(rank: int = 0, world_size: int = 1) -> ClipLoss:
    """The loss module for this rank (a plain single-process ClipLoss when ``world_size == 1``)."""
    return ClipLoss(local_loss=False, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world_size)


def contrastive_loss(model: torch.nn.Module, loss_fn: ClipLoss, images: torch.Tensor,
                     tokens: torch.Tensor) -> torch.Tensor:
    """Forward both towers on this rank's pairs and return the global-batch InfoNCE."""
    image_features, text_features, scale = model(images, tokens)
    return loss_fn(image_features.float(), text_features.float(), scale.float())


@torch.no_grad()
def clamp_logit_scale(model: torch.nn.Module) -> None:
    """Keep ``logit_scale`` in [0, ln 100] after each step, as open_clip's training does."""
    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
