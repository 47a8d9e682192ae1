"""PRIMED's per-query retrieval stages (docs/methods.md#5-primed), on one query's dense search result.

1. **Dense, dynamic threshold.** Scores are cosine similarities (rounded to ``decimals`` places
   before comparing, so float noise does not split a tie). With U the distinct scores in
   descending order and k' = min(k, |U|), the threshold is U[k'-1] and *every* candidate scoring
   >= it is kept: ties at the k-th unique score are all in. The retriever is asked for
   ``k * over_fetch`` neighbours so that ties are visible; ties beyond that cap are not seen.
2. **Cross-modal re-rank.** Each candidate's image is scored against the query text with the
   starting model (cos(text(query), image(candidate)), computed by the planner). Candidates are
   grouped by caption, keeping the ``k_v`` best images per caption; if more than k remain, a BM25
   gate (``bm25s``, English stop words) keeps the k captions lexically closest to the query (ties
   broken by the cross-modal score); the survivors are sorted by the cross-modal score.
   **Text-only entries** (ROCO rows without an image) have no cross-modal score and cannot be a
   reference *pair*: the planner leaves them out before stage 1 (see :mod:`.planner`), and
   :func:`rank_candidates` drops any that reach it.
The siphon (:mod:`medcl.primed.siphon`) then takes the first a, b or c of the ranked list.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class Candidate:
    id: str
    caption: str
    dense: float
    xmodal: float  # NaN for a text-only entry


def dense_threshold(scores: np.ndarray, k: int, decimals: int = 6) -> float | None:
    """The k'-th largest unique (rounded) finite score, k' = min(k, #unique); None if none."""
    finite = np.round(np.asarray(scores, dtype=np.float64), decimals)
    unique = np.unique(finite[np.isfinite(finite)])[::-1]
    if not len(unique):
        return None
    return float(unique[min(k, len(unique)) - 1])


def dense_stage(ids: list[str], scores: np.ndarray, k: int, decimals: int = 6) -> np.ndarray:
    """Positions (into ``ids``) of every candidate at or above :func:`dense_threshold`."""
    threshold = dense_threshold(scores, k, decimals)
    if threshold is None:
        return np.zeros(0, dtype=np.int64)
    rounded = np.round(np.asarray(scores, dtype=np.float64), decimals)
    keep = np.isfinite(rounded) & (rounded >= threshold) & np.asarray([bool(i) for i in ids])
    return np.flatnonzero(keep)


def group_by_caption(candidates: list[Candidate], k_v: int) -> list[Candidate]:
    """The ``k_v`` highest cross-modal scores per distinct caption (order: best first overall)."""
    ranked = sorted(candidates, key=lambda c: (-c.xmodal, c.id))
    taken: dict[str, int] = {}
    kept = []
    for c in ranked:
        if taken.get(c.caption, 0) < k_v:
            taken[c.caption] = taken.get(c.caption, 0) + 1
            kept.append(c)
    return kept


def bm25s_module():
    """``bm25s``, imported with its logger (set to DEBUG by the package, one line per index) quieted."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def bm25_gate(query: str, candidates: list[Candidate], k: int) -> list[Candidate]:
    """The k candidates whose captions score highest under BM25 for ``query`` (ties: cross-modal)."""
    if len(candidates) <= k:
        return list(candidates)
    bm25s = bm25s_module()
    index = bm25s.BM25()
    index.index(bm25s.tokenize([c.caption for c in candidates], stopwords="en", show_progress=False),
                show_progress=False)
    query_tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
    lexical = index.get_scores(query_tokens) if query_tokens else np.zeros(len(candidates))
    order = np.lexsort((np.array([c.id for c in candidates]), -np.array([c.xmodal for c in candidates]), -lexical))
    return [candidates[i] for i in order[:k]]


def rank_candidates(query: str, candidates: list[Candidate], *, k: int, k_v: int) -> tuple[list[Candidate], int]:
    """Stage 2 on stage-1 survivors: drop text-only, group by caption, BM25 gate, sort.

    Returns the ranked pairs and the number of text-only entries dropped.
    """
    with_image = [c for c in candidates if np.isfinite(c.xmodal)]
    grouped = group_by_caption(with_image, k_v)
    gated = bm25_gate(query, grouped, k)
    return sorted(gated, key=lambda c: (-c.xmodal, c.id)), len(candidates) - len(with_image)
