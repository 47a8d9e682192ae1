"""Synthetic embedding directories for index tests and benchmarks (no model, no corpus).

``clustered_vectors`` draws L2-normalised vectors around ``clusters`` random unit centres:
x = normalise(c + noise * g / sqrt(dim)), g ~ N(0, I), which is closer to real CLIP embeddings
(tight topical clusters) than uniform points on the sphere, where every neighbour is nearly as far
as any other. ``write_embedding_dir`` writes them in the embedding-shard layout of
:mod:`medcl.corpus.shards` (every ``image_every``-th row has an image embedding; none when it is ``None``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medcl.corpus import shards as emb


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def clustered_vectors(rows: int, dim: int, *, clusters: int = 1000, noise: float = 1.0, seed: int = 0,
                      draw: int = 0) -> np.ndarray:
    """``seed`` fixes the centres; ``draw`` the points around them (queries: same seed, another draw)."""
    centres = normalise(np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32))
    rng = np.random.default_rng([seed, draw + 1])
    labels = rng.integers(0, clusters, size=rows)
    points = centres[labels] + noise * rng.standard_normal((rows, dim), dtype=np.float32) / np.sqrt(dim)
    return normalise(points)


def write_embedding_dir(directory: Path, *, rows: int, dim: int, shards: int = 2, image_every: int | None = 2,
                        clusters: int = 1000, noise: float = 1.0, seed: int = 0,
                        model: dict | None = None, corpus: str = "") -> Path:
    """``rows`` synthetic entries ``syn:000000``... split evenly over ``shards`` shard files."""
    directory = Path(directory)
    text = clustered_vectors(rows, dim, clusters=clusters, noise=noise, seed=seed)
    image = clustered_vectors(rows, dim, clusters=clusters, noise=noise, seed=seed, draw=1000)
    infos = []
    for number, part in enumerate(np.array_split(np.arange(rows), shards)):
        ids = [f"syn:{i:06d}" for i in part]
        table = emb.embeddings_table(
            ids=ids, captions=[f"synthetic caption {i}" for i in part],
            modalities=["ct" if i % 3 else "mr" for i in part], sources=["synthetic"] * len(part),
            image_embeddings=image[part], text_embeddings=text[part],
            has_image=(part % image_every == 0) if image_every else np.zeros(len(part), bool))
        infos.append(emb.write_shard(directory, number, table))
    model = model or {"name": "synthetic", "pretrained": None, "fingerprint": None}
    emb.write_manifest(directory, dim=dim, model=model, corpus=corpus, shards=infos)
    return directory
