"""PRIMED's built-in corpus, used when no index is configured: synthmed's captioned pairs in memory.

Like ZSCL's default reference source, it makes ``strategy: {name: primed}`` run with nothing built
first: ``builtin_per_class`` images per finding and domain of a synthmed build (seed ``builtin_seed``,
kept apart from the experiment's), PNG-encoded as a corpus would hold them. Its domains are
``builtin_domains``, by default every synthmed domain that none of the sequence's tasks uses: a
reference corpus that contains the tasks' own distributions (the future tasks' included) would let
PRIMED rehearse them, which the paper's PubMed corpus does not. With ZSCL's reference set drawn the
same way (``{name: synthmed, seed: 1, domains: <held out>, per_class: 20}``) both methods distil on
identical pairs, as the paper's PRIMED_uni-vs-ZSCL comparison requires.
:class:`InMemoryRetriever` answers the Retriever protocol by exact inner-product search over the
captions embedded with the given text encoder (here the starting model's text tower).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from medcl.corpus.merge import SearchResult  # not corpus.retrieval: that imports FAISS


class InMemoryRetriever:
    """Exact search over ``rows`` (CORPUS_SCHEMA dicts) in the ``text`` space."""

    def __init__(self, rows: list[dict], encode_texts: Callable[[list[str]], np.ndarray]):
        self.rows = {r["id"]: r for r in rows}
        self.ids = [r["id"] for r in rows]
        self.encode_texts = encode_texts
        self.vectors = encode_texts([r["caption"] for r in rows])

    def search(self, queries: np.ndarray, k: int, *, space: str = "text") -> SearchResult:
        if space != "text":
            raise ValueError(f"the built-in corpus is searchable in the text space only, not {space!r}")
        scores = np.asarray(queries, np.float32) @ self.vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        pad = k - order.shape[1]
        ids = [[self.ids[j] for j in row] + [""] * pad for row in order]
        top = np.concatenate([top, np.full((len(ids), pad), -np.inf, np.float32)], axis=1)
        return SearchResult(ids, top, [[self.rows[i]["caption"] if i else "" for i in row] for row in ids],
                            [[self.rows[i]["modality"] if i else "" for i in row] for row in ids])

    def search_text(self, texts: list[str], k: int, *, space: str = "text") -> SearchResult:
        return self.search(self.encode_texts(list(texts)), k, space=space)

    def fetch(self, ids: list[str]) -> list[dict]:
        return [dict(self.rows[i]) if i else None for i in ids]

    def captions_with_images(self) -> tuple[list[str], list[str]]:
        kept = [r for r in self.rows.values() if r["image"] is not None]
        return [r["id"] for r in kept], [r["caption"] for r in kept]


def builtin_domains(configured: list[str] | None, tasks) -> list[str]:
    """``configured``, or every synthmed domain that no task of ``tasks`` is drawn from (a task's
    ``metadata["domain_key"]``; tasks of other benchmarks leave all six). ValueError when the tasks
    use every domain and none is configured."""
    from medcl.data.synthmed import DOMAIN_NAMES

    if configured:
        return list(configured)
    used = {t.metadata.get("domain_key") for t in tasks if t.metadata.get("synthetic")}
    held_out = [d for d in DOMAIN_NAMES if d not in used]
    if not held_out:
        raise ValueError("strategy.builtin_domains: the sequence uses every synthmed domain, so no built-in "
                         "reference corpus is disjoint from its tasks; set builtin_domains explicitly or index_dir")
    return held_out


def synthmed_rows(*, per_class: int, seed: int, domains: list[str] | None = None, image_size: int = 32) -> list[dict]:
    """Synthmed's captioned pairs (train split of ``domains``, default all six) as corpus rows with PNG bytes."""
    from medcl.corpus.sources.synthmed import png_bytes
    from medcl.data.synthmed import DOMAIN_NAMES, SynthMed, captioned_pairs

    tasks = SynthMed().build({"domains": list(domains or DOMAIN_NAMES), "train_per_class": per_class, "val_per_class": 1,
                              "test_per_class": 1, "image_size": image_size}, seed)
    return [{**pair, "id": f"synthmed:{pair['id'].split('/', 1)[1]}", "image": png_bytes(pair["image"])}
            for pair in captioned_pairs(tasks)]
