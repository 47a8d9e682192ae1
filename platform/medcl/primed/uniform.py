"""``primed_uniform``'s reference sets: uniform keyword retrieval, the same size as PRIMED's.

For task i with PRIMED's (dynamic) reference set of N pairs: the queries of M^i (M0 plus earlier
tasks' class labels, no levels) are shuffled with a seed of (seed, "uniform", i) (medcl.seeds); a BM25 index (``bm25s``,
English stop words) over the captions of every corpus entry *with an image* ranks each query's
hits (ties by id); then the queries take turns, each adding its next best hit not yet chosen
(lexical score > 0), until N pairs are chosen or every list is exhausted. No dense search, no
cross-modal re-rank, no hierarchy: it isolates what the siphon adds. The BM25 scores of every
entry are computed per query (cost O(queries x corpus)), fine for the corpora shipped here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medcl import seeds
from medcl.primed.select import bm25s_module


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


def uniform_rows(index: KeywordIndex, queries: list, *, size: int, seed: int, task_index: int) -> list[dict]:
    """Rows ``{id, caption, level="uniform", query, dense_score, xmodal_score}`` (see module doc)."""
    order = seeds.rng(seed, "uniform", task_index).permutation(len(queries))
    lists = [(queries[i].text, index.ranked(queries[i].text)) for i in order]
    cursors = [0] * len(lists)
    chosen: set[int] = set()
    rows: list[dict] = []
    while len(rows) < size:
        progressed = False
        for q, (text, hits) in enumerate(lists):
            while cursors[q] < len(hits) and hits[cursors[q]] in chosen:
                cursors[q] += 1
            if cursors[q] < len(hits) and len(rows) < size:
                position = int(hits[cursors[q]])
                chosen.add(position)
                rows.append({"id": index.ids[position], "caption": index.captions[position], "level": "uniform",
                             "query": text, "dense_score": float("nan"), "xmodal_score": float("nan")})
                progressed = True
        if not progressed:
            break
    return rows
