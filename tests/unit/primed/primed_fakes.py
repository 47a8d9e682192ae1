"""Test doubles for PRIMED: an exact in-memory retriever over a tiny synthmed corpus, tiny tasks."""
from __future__ import annotations

import hashlib
import io
import re

import numpy as np

from medcl.corpus.retrieval import SearchResult

DIM = 64


def embed_text(text: str) -> np.ndarray:
    """Hashed bag of words, L2-normalised: texts sharing words are close."""
    v = np.zeros(DIM, np.float32)
    for word in re.findall(r"[a-z]+", text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    return v / max(np.linalg.norm(v), 1e-6)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeRetriever:
    """Exact inner-product search over ``rows`` (dicts of CORPUS_SCHEMA); ``image: None`` = text-only."""

    def __init__(self, rows: list[dict]):
        self.rows = {r["id"]: r for r in rows}
        self.ids = [r["id"] for r in rows]
        self.vectors = np.stack([embed_text(r["caption"]) for r in rows])
        self.calls = 0

    def search(self, queries: np.ndarray, k: int, *, space: str = "text") -> SearchResult:
        self.calls += 1
        scores = queries @ self.vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids = [[self.ids[j] for j in row] for row in order]
        top = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        if k > len(self.ids):  # missing slots
            pad = k - len(self.ids)
            ids = [row + [""] * pad for row in ids]
            top = np.concatenate([top, np.full((len(ids), pad), -np.inf, np.float32)], axis=1)
        captions = [[self.rows[i]["caption"] if i else "" for i in row] for row in ids]
        modalities = [[self.rows[i]["modality"] if i else "" for i in row] for row in ids]
        return SearchResult(ids, top, captions, modalities)

    def search_text(self, texts: list[str], k: int, *, space: str = "text") -> SearchResult:
        return self.search(np.stack([embed_text(t) for t in texts]), k, space=space)

    def fetch(self, ids: list[str]) -> list[dict]:
        return [dict(self.rows[i]) for i in ids]


def synthmed_corpus(per_class: int = 3, seed: int = 5, text_only: int = 0) -> list[dict]:
    """Synthmed captioned pairs (PNG bytes) plus ``text_only`` caption-only rows."""
    from medcl.data.synthmed import SynthMed, captioned_pairs

    tasks = SynthMed().build({"train_per_class": per_class, "val_per_class": 1, "test_per_class": 1,
                              "image_size": 16, "num_tasks": 6}, seed)
    rows = [{**p, "image": png(p["image"])} for p in captioned_pairs(tasks)]
    rows += [{"id": f"roco:{i}", "image": None, "caption": f"chest X-ray-like image showing a nodule, report {i}",
              "source": "roco", "modality": "xray", "license": "CC BY"} for i in range(text_only)]
    return rows


def synthmed_tasks(domains=("xray", "ultrasound")):
    from medcl.data.synthmed import SynthMed

    return SynthMed().build({"domains": list(domains), "train_per_class": 8, "val_per_class": 1,
                             "test_per_class": 4, "image_size": 16}, 0)
