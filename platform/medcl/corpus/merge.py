"""Top-k merge of per-shard search results.

Every index shard answers a query batch with its own top-k; the global top-k is the best ``k`` of the
``S * k`` candidates, ordered by score (descending) with ties broken by id (ascending), so the result
does not depend on the order in which shards answered. A slot with no hit has id ``""`` and score
``-inf``; it sorts after every real hit.

For an exact index (``Flat``) on every shard, the merge equals one exact index over all rows, because
each of the global top-k is in the top-k of its own shard.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MISSING_ID = ""
MISSING_SCORE = float("-inf")


@dataclass
class Hits:
    """Top-k hits of Q queries: ``scores`` (Q, k) float32 descending per row; ``ids``, ``captions``,
    ``modalities`` (Q, k) arrays of str (``""`` in missing slots)."""

    scores: np.ndarray
    ids: np.ndarray
    captions: np.ndarray
    modalities: np.ndarray

    @property
    def k(self) -> int:
        return int(self.scores.shape[1])

    @classmethod
    def empty(cls, queries: int, k: int) -> "Hits":
        def blank():
            return np.full((queries, k), MISSING_ID, dtype=object)

        return cls(np.full((queries, k), MISSING_SCORE, np.float32), blank(), blank(), blank())


@dataclass
class SearchResult:
    """Q queries x k columns, best first; a missing slot has id ``""`` and score ``-inf``. What every
    retriever returns (:mod:`medcl.corpus.retrieval`); here, beside :class:`Hits`, so that a retriever
    without FAISS (PRIMED's built-in corpus) can return it without importing the index code."""

    ids: list[list[str]]
    scores: np.ndarray  # (Q, k) float32, descending per row
    captions: list[list[str]]
    modalities: list[list[str]]

    @classmethod
    def from_hits(cls, hits: Hits) -> "SearchResult":
        def lists(values):
            return [[str(v) for v in row] for row in values]

        return cls(lists(hits.ids), np.asarray(hits.scores, np.float32), lists(hits.captions), lists(hits.modalities))

    def __len__(self) -> int:
        return len(self.ids)


def merge_topk(parts: Sequence[Hits], k: int) -> Hits:
    """The best ``k`` hits per query over ``parts`` (all with the same number of queries).

    Order: score descending, then id ascending. Missing slots (fewer than ``k`` candidates in all)
    are filled with id ``""`` and score ``-inf``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not parts:
        raise ValueError("merge_topk needs at least one shard's hits")
    queries = parts[0].scores.shape[0]
    if any(p.scores.shape[0] != queries for p in parts):
        raise ValueError("every shard must answer the same number of queries")
    scores = np.concatenate([np.asarray(p.scores, np.float32) for p in parts], axis=1)
    ids = np.concatenate([np.asarray(p.ids, dtype=object) for p in parts], axis=1)
    captions = np.concatenate([np.asarray(p.captions, dtype=object) for p in parts], axis=1)
    modalities = np.concatenate([np.asarray(p.modalities, dtype=object) for p in parts], axis=1)
    if scores.shape[1] < k:
        pad = Hits.empty(queries, k - scores.shape[1])
        scores = np.concatenate([scores, pad.scores], axis=1)
        ids, captions, modalities = (np.concatenate([a, b], axis=1) for a, b in
                                     ((ids, pad.ids), (captions, pad.captions), (modalities, pad.modalities)))
    # lexsort: the last key is the primary one; str ids sort lexicographically ("" first, but a missing
    # slot always has the lowest score, so it stays behind every hit)
    order = np.lexsort((ids.astype(str), -scores), axis=-1)[:, :k]
    rows = np.arange(queries)[:, None]
    return Hits(scores[rows, order], ids[rows, order], captions[rows, order], modalities[rows, order])


def merge_labels(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` ``(scores, labels)`` per query over per-shard ``(scores (Q, k'), labels (Q, k'))``:
    score descending, then label ascending; missing slots are label -1, score ``-inf``. Labels are
    global rows of the index's id mapping, so only the merged top-k is ever turned into ids."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not parts:
        raise ValueError("merge_labels needs at least one shard's hits")
    scores = np.concatenate([np.asarray(s, np.float32) for s, _ in parts], axis=1)
    labels = np.concatenate([np.asarray(lab, np.int64) for _, lab in parts], axis=1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.concatenate([scores, np.full((len(scores), pad), MISSING_SCORE, np.float32)], axis=1)
        labels = np.concatenate([labels, np.full((len(labels), pad), -1, np.int64)], axis=1)
    scores = np.where(labels < 0, np.float32(MISSING_SCORE), scores)
    order = np.lexsort((np.where(labels < 0, np.iinfo(np.int64).max, labels), -scores), axis=-1)[:, :k]
    rows = np.arange(len(scores))[:, None]
    return scores[rows, order], labels[rows, order]
