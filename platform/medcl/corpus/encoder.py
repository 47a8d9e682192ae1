"""Text queries embedded with the model that made the embeddings.

The index records the embedding manifest's ``model`` (``name``, ``pretrained``, ``fingerprint``,
``seed``, ``image_size``). :class:`TextEncoder` builds that model with :func:`medcl.models.create_model`
and returns L2-normalised text embeddings. When the manifest has a fingerprint, the built weights
must match it (``state_fingerprint``): a randomly initialised model (``pretrained: null``) is built
after ``torch.manual_seed(model.get("seed", 0))``, so it matches only if the embedding step seeded
the same way; otherwise the query embeddings would be meaningless and :class:`QueryModelError` says so.
"""
from __future__ import annotations

import numpy as np
import torch

from medcl.errors import MedclError

BATCH = 256


class QueryModelError(MedclError, ValueError):
    """The query encoder's weights differ from the ones the embeddings were made with."""


def build_text_model(model_info: dict):
    """The :class:`medcl.models.ModelBundle` that embedded the corpus (checked by fingerprint)."""
    from medcl.models import create_model, state_fingerprint

    name, pretrained = model_info.get("name"), model_info.get("pretrained")
    if not name:
        raise QueryModelError("the index's model has no name; rebuild the embeddings with medcl corpus embed")
    torch.manual_seed(int(model_info.get("seed", 0) or 0))
    bundle = create_model(name, pretrained=pretrained, image_size=model_info.get("image_size"))
    expected = model_info.get("fingerprint")
    if expected and state_fingerprint(bundle.model) != expected:
        raise QueryModelError(
            f"model {name!r} (pretrained={pretrained!r}) built here has weights {state_fingerprint(bundle.model)}, "
            f"but the embeddings were made with {expected}; embed the corpus from a saved weights file "
            f"(--pretrained PATH) so that text queries can be embedded with the same weights")
    return bundle


class TextEncoder:
    """``encoder(texts) -> (N, dim) float32``, L2-normalised, with the index's model."""

    def __init__(self, model_info: dict | None = None, *, bundle=None):
        if bundle is None and model_info is None:
            raise ValueError("TextEncoder needs the index's model description or a ModelBundle")
        self.bundle = bundle if bundle is not None else build_text_model(model_info)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        if len(texts) == 0:
            return np.zeros((0, self([""]).shape[1]), np.float32)
        model, out = self.bundle.model, []
        for start in range(0, len(texts), BATCH):
            tokens = self.bundle.tokenizer(list(texts[start:start + BATCH]))
            features = model.encode_text(tokens).float()
            out.append(torch.nn.functional.normalize(features, dim=-1).cpu().numpy())
        return np.concatenate(out)
