"""The cross-modal scorer of PRIMED's re-rank: the *starting* model (row 0 of the accuracy matrix).

On the driver, :meth:`StartingModelScorer.build` rebuilds the model exactly as every worker does
before training (``torch.manual_seed(seed)`` then ``create_model``), so a randomly initialised tiny
model is the same model here and there; a worker that plans for itself passes its own model.
score(query, pair) = cos(text(query), image(pair's image)).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from medcl.data.reference import _decode


class StartingModelScorer:
    """Embeds query texts and encoded corpus images (no grad, eval mode); image embeddings cached by id.

    ``preprocess``: uint8 NHWC images -> model input on the model's device; images are decoded at
    ``image_size`` first.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, preprocess: Callable[[np.ndarray], torch.Tensor],
                 image_size: int, *, batch_size: int = 128):
        self.model, self.tokenizer, self.preprocess = model.eval(), tokenizer, preprocess
        self.image_size, self.batch_size = image_size, batch_size
        self.device = next(model.parameters()).device
        self._images: dict[str, np.ndarray | None] = {}

    @classmethod
    def build(cls, model: dict, seed: int, device: str = "cpu") -> "StartingModelScorer":
        """The starting model of an experiment's ``model`` section (name, pretrained, image_size)."""
        from medcl.engine.preprocess import to_model_input
        from medcl.models import create_model

        torch.manual_seed(seed)
        bundle = create_model(model["name"], pretrained=model.get("pretrained"), image_size=model.get("image_size"))
        return cls(bundle.model.to(device), bundle.tokenizer,
                   lambda x: to_model_input(x, bundle.image_size, bundle.mean, bundle.std, device), bundle.image_size)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> np.ndarray:
        """(Q, D) normalised text embeddings."""
        out = [self.model.encode_text(self.tokenizer(texts[i:i + self.batch_size]).to(self.device), normalize=True)
               for i in range(0, len(texts), self.batch_size)]
        return torch.cat(out).float().cpu().numpy()

    @torch.no_grad()
    def images(self, rows: list[dict]) -> None:
        """Embed the images of corpus ``rows`` not seen yet (a row without an image is remembered as None)."""
        todo = [r for r in rows if r["id"] not in self._images and r.get("image") is not None]
        for r in rows:
            if r.get("image") is None:
                self._images.setdefault(r["id"], None)
        for start in range(0, len(todo), self.batch_size):
            part = todo[start:start + self.batch_size]
            x = self.preprocess(np.stack([_decode(r["image"], self.image_size) for r in part]))
            features = self.model.encode_image(x, normalize=True).float().cpu().numpy()
            self._images.update({r["id"]: f for r, f in zip(part, features)})

    def known(self, corpus_id: str) -> bool:
        return corpus_id in self._images

    def image(self, corpus_id: str) -> np.ndarray | None:
        return self._images[corpus_id]
