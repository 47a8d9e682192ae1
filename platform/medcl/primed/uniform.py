"""The two ablations' reference sets: PRIMED_uni (the paper's) and same-size BM25 keyword sets.

``primed_uniform`` (mode ``"uniform"``, the paper's PRIMED_uni): ``keywords`` (30) keywords drawn
uniformly without replacement from the distinct diseases of M0, seeded by (seed, "uniform-keywords")
(medcl.seeds) and the same for every task (no earlier tasks' labels, no levels); each keyword is
ranked by PRIMED's own retrieval (dense stage and cross-modal re-rank, :mod:`.select`) and the
keywords take turns, each adding its next best pair not yet chosen (:func:`round_robin`), until
``size`` pairs are chosen: the size of ZSCL's reference set, not PRIMED's. It isolates what the
question hierarchy, the siphon and the per-task sizing add.

``primed_bm25`` (mode ``"bm25"``, medcl's variant): for task i with PRIMED's (dynamic) reference set
of N pairs, the queries of M^i (M0 plus earlier tasks' class labels, no levels) are shuffled with a
seed of (seed, "uniform", i); a BM25 index (``bm25s``, English stop words) over the captions of
every corpus entry *with an image* ranks each query's hits (ties by id); the queries take turns
until N pairs are chosen (lexical score > 0). No dense search, no cross-modal re-rank, no hierarchy,
the same size: it isolates what the dense retrieval adds. The BM25 scores of every entry are
computed per query (cost O(queries x corpus)), fine for the corpora shipped here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medcl import seeds
from medcl.primed.select import bm25s_module

# ZSCL's default reference set (medcl.data.reference.ReferenceConfig(): synthmed, 6 domains, 20 per
# finding) holds 600 pairs; PRIMED_uni is sized like ZSCL's set (tests/unit/primed check the number).
ZSCL_DEFAULT_REFERENCE_SIZE = 600


class KeywordIndex:
    """BM25 over ``(id, caption)`` pairs."""

    def __init__(self, ids: list[str], captions: list[str]):
        bm25s = bm25s_module()
        self.ids, self.captions = list(ids), list(captions)
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize(self.captions, stopwords="en", show_progress=False), show_progress=False)

    def ranked(self, query: str) -> np.ndarray:
        """Positions with a positive BM25 score, best first (ties: id order)."""
        tokens = bm25s_module().tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        if not tokens:
            return np.zeros(0, dtype=np.int64)
        scores = self._bm25.get_scores(tokens)
        order = np.lexsort((np.asarray(self.ids), -scores))
        return order[scores[order] > 0]


def corpus_captions(corpus_dir: str | Path) -> tuple[list[str], list[str]]:
    """Ids and captions of the corpus entries that have an image."""
    import pyarrow.compute as pc

    from medcl.corpus.store import CorpusStore

    table = CorpusStore(corpus_dir).read_all(columns=["id", "caption", "image"])
    table = table.filter(pc.is_valid(table["image"]))
    return table["id"].to_pylist(), table["caption"].to_pylist()


def round_robin(lists: Sequence[Sequence], size: int, key=lambda item: item) -> list[tuple[int, object]]:
    """``(list number, item)`` pairs: the lists take turns, each giving its next item whose ``key``
    was not chosen yet, until ``size`` items are chosen or every list is exhausted."""
    cursors, chosen, out = [0] * len(lists), set(), []
    while len(out) < size:
        progressed = False
        for q, items in enumerate(lists):
            while cursors[q] < len(items) and key(items[cursors[q]]) in chosen:
                cursors[q] += 1
            if cursors[q] < len(items) and len(out) < size:
                item = items[cursors[q]]
                chosen.add(key(item))
                out.append((q, item))
                progressed = True
        if not progressed:
            break
    return out


def uniform_rows(index: KeywordIndex, queries: list, *, size: int, seed: int, task_index: int) -> list[dict]:
    """``primed_bm25``'s rows ``{id, caption, level="bm25", query, dense_score, xmodal_score}``."""
    order = seeds.rng(seed, "uniform", task_index).permutation(len(queries))
    lists = [(queries[i].text, index.ranked(queries[i].text)) for i in order]
    picked = round_robin([hits for _, hits in lists], size, key=int)
    return [{"id": index.ids[int(p)], "caption": index.captions[int(p)], "level": "bm25", "query": lists[q][0],
             "dense_score": float("nan"), "xmodal_score": float("nan")} for q, p in picked]


def uniform_keywords(pool, count: int, seed: int) -> list[str]:
    """``count`` distinct diseases of M0 (sorted, then drawn uniformly without replacement)."""
    diseases = sorted({q.disease for q in pool.questions})
    if count > len(diseases):
        raise ValueError(f"strategy.keywords: {count} keywords asked, the question pool has {len(diseases)} diseases")
    picked = seeds.rng(seed, "uniform-keywords").choice(len(diseases), count, replace=False)
    return [diseases[i] for i in np.sort(picked)]


def keyword_rows(ranked: dict[str, list], keywords: list[str], size: int) -> list[dict]:
    """PRIMED_uni's rows ``{id, caption, level="uniform", query, dense_score, xmodal_score}`` from each
    keyword's ranked candidates (:class:`medcl.primed.select.Candidate` lists)."""
    picked = round_robin([ranked.get(k, []) for k in keywords], size, key=lambda c: c.id)
    return [{"id": c.id, "caption": c.caption, "level": "uniform", "query": keywords[q], "dense_score": c.dense,
             "xmodal_score": c.xmodal} for q, c in picked]


def keyword_depth(size: int, keywords: int) -> int:
    """Pairs each keyword must be able to give so that ``keywords`` of them can fill ``size``."""
    return -(-size // max(1, keywords))

