"""Held-out sanity metrics of a CLIP model on image-caption pairs: retrieval recall and InfoNCE.

Image->text recall@k: image i is a hit when its own caption *text* is among the k distinct
held-out captions most similar to it (cosine of normalised features). Captions are deduplicated
first, so two images with the same caption (common in synthmed, whose captions name domain,
finding and location) do not make the target ambiguous. Text->image recall@k: a distinct caption
is a hit when one of the k most similar images carries it. Chance level of image->text recall@k is
k / (number of distinct captions). All values are percentages.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from medcl.data.pairs import ImageCaptions
from medcl.pretrain.loss import global_clip_loss

KS = (1, 5)


@torch.no_grad()
def encode_pairs(model, tokenizer, pairs: ImageCaptions, preprocess: Callable, batch_size: int,
                 device) -> tuple[torch.Tensor, torch.Tensor, list[str], np.ndarray]:
    """Normalised features of every image (N, D) and every distinct caption (U, D), the distinct
    captions, and each image's index into them."""
    distinct = sorted(set(pairs.captions))
    index = {c: i for i, c in enumerate(distinct)}
    images = torch.cat([model.encode_image(preprocess(pairs.images[s : s + batch_size].copy()), normalize=True).float()
                        for s in range(0, len(pairs), batch_size)])
    texts = torch.cat([model.encode_text(tokenizer(distinct[s : s + batch_size]).to(device), normalize=True).float()
                       for s in range(0, len(distinct), batch_size)])
    return images, texts, distinct, np.array([index[c] for c in pairs.captions])


@torch.no_grad()
def heldout_metrics(model, tokenizer, pairs: ImageCaptions, preprocess: Callable, *, batch_size: int = 256,
                    loss_batch: int = 128, device="cpu") -> dict:
    """Recall@{1,5} both ways, chance level, and the mean InfoNCE over fixed held-out batches."""
    was_training = model.training
    model.eval()
    try:
        images, texts, distinct, target = encode_pairs(model, tokenizer, pairs, preprocess, batch_size, device)
        sim = images @ texts.t()
        target_t = torch.as_tensor(target, device=sim.device)
        out = {"pairs": len(pairs), "distinct_captions": len(distinct)}
        for k in KS:
            kk = min(k, len(distinct))
            i2t = (sim.topk(kk, dim=1).indices == target_t[:, None]).any(dim=1).float().mean()
            top_images = sim.t().topk(min(k, len(pairs)), dim=1).indices  # (U, k)
            t2i = (target_t[top_images] == torch.arange(len(distinct), device=sim.device)[:, None]).any(dim=1).float().mean()
            out[f"i2t_r{k}"], out[f"t2i_r{k}"] = 100 * float(i2t), 100 * float(t2i)
            out[f"chance_i2t_r{k}"] = 100 * kk / len(distinct)
        out["loss"] = _mean_loss(model, tokenizer, pairs, preprocess, loss_batch, device)
        return out
    finally:
        model.train(was_training)


def _mean_loss(model, tokenizer, pairs: ImageCaptions, preprocess, batch: int, device) -> float:
    loss_fn, losses = global_clip_loss(), []
    for s in range(0, len(pairs) - 1, batch):
        end = min(len(pairs), s + batch)
        if end - s < 2:
            break
        fi, ft, scale = model(preprocess(pairs.images[s:end].copy()), tokenizer(list(pairs.captions[s:end])).to(device))
        losses.append(float(loss_fn(fi.float(), ft.float(), scale.float())))
    return float(np.mean(losses))
