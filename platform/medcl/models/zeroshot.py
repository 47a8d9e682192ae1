"""CLIP-style classification heads from text prompts (MTIL protocol, docs/methods.md#1-evaluation-protocol).

Class c of a task is described by one or more prompts. Its embedding is the mean of the
prompts' L2-normalised text embeddings, normalised again. The logit of image x for class c is
``logit_scale * cos(f(x), e_c)``; the prediction is the arg-max over the task's own classes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Tokenizer = Callable[[list[str]], torch.Tensor]


def encode_class_prompts(model: torch.nn.Module, tokenizer: Tokenizer,
                         class_prompts: Sequence[Sequence[str]],
                         device: str | torch.device | None = None) -> torch.Tensor:
    """Class embeddings (C, D), row c = normalise(mean_p normalise(text(prompt_cp))).

    All prompts are tokenised and encoded in one batch with ``model.encode_text(tokens,
    normalize=True)``. Differentiable when grad is enabled (training through the text tower);
    call under ``torch.no_grad()`` for evaluation. ``device`` defaults to the model's.
    """
    if not class_prompts:
        raise ValueError("class_prompts is empty: a task needs at least one class")
    counts = [len(prompts) for prompts in class_prompts]
    if min(counts) == 0:
        raise ValueError(f"class {counts.index(0)} has no prompts")
    if device is None:
        device = next(model.parameters()).device
    texts = [str(p) for prompts in class_prompts for p in prompts]
    tokens = tokenizer(texts).to(device)
    features = model.encode_text(tokens, normalize=True)
    class_of_prompt = torch.repeat_interleave(torch.arange(len(counts), device=features.device),
                                              torch.tensor(counts, device=features.device))
    sums = features.new_zeros(len(counts), features.shape[1]).index_add(0, class_of_prompt, features)
    means = sums / torch.tensor(counts, device=features.device, dtype=features.dtype).unsqueeze(1)
    return F.normalize(means, dim=-1)


def clip_logits(image_features: torch.Tensor, class_embeddings: torch.Tensor,
                logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Logits (N, C) = logit_scale * image_features @ class_embeddings.T.

    Both inputs are expected L2-normalised, so each logit is the scaled cosine similarity;
    ``logit_scale`` is the already exponentiated scale (``model.logit_scale.exp()``).
    """
    return logit_scale * image_features @ class_embeddings.t().to(image_features.dtype)


class ZeroShotClassifier:
    """Classifies preprocessed images over a fixed set of classes described by prompts.

    The class embeddings are computed once (without grad) at construction; call
    :meth:`refresh` after the model's text tower changes.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer,
                 class_prompts: Sequence[Sequence[str]], device: str | torch.device | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.class_prompts = [list(p) for p in class_prompts]
        self.device = device if device is not None else next(model.parameters()).device
        self.class_embeddings = self.refresh()

    @torch.no_grad()
    def refresh(self) -> torch.Tensor:
        """Recompute and return the (C, D) class embeddings from the current model."""
        self.class_embeddings = encode_class_prompts(self.model, self.tokenizer, self.class_prompts, self.device)
        return self.class_embeddings

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) of images (N, 3, H, W), already normalised with the model's mean/std."""
        features = self.model.encode_image(images.to(self.device), normalize=True)
        return clip_logits(features, self.class_embeddings, self.model.logit_scale.exp())

    __call__ = logits

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class indices (N,) as a LongTensor: arg-max of :meth:`logits`."""
        return self.logits(images).argmax(dim=1)
