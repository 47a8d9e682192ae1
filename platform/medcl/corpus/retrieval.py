"""The retrieval API: top-k corpus neighbours of query embeddings or texts.

Two implementations answer the same :class:`Retriever` protocol:

* :class:`LocalRetriever`: every index shard loaded in this process, one FAISS index per space (the
  trained index once, every shard's codes appended: index_load.py; the baseline).
* :class:`medcl.corpus.service.RetrievalService`: shard actors on Ray, reachable by name from any
  process of the cluster (Train workers included).

Spaces: ``text`` holds every corpus entry's caption embedding, ``image`` the image embeddings of the
entries that have an image (text-only entries such as ROCO's are found in the text space only). A
query embedding must come from the index's model (``index.json`` ``model``), L2-normalised; scores
are inner products, i.e. cosine similarities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from medcl import storage
from medcl.corpus.index import RowMap, check_queries, local_index_dir, read_index_manifest
from medcl.corpus.index_load import load_space
from medcl.corpus.merge import MISSING_ID, Hits, SearchResult  # SearchResult: re-exported, its home is merge


@runtime_checkable
class Retriever(Protocol):
    def search(self, queries: np.ndarray, k: int, *, space: str = "text") -> SearchResult: ...

    def search_text(self, texts: list[str], k: int, *, space: str = "text") -> SearchResult: ...

    def fetch(self, ids: list[str]) -> list[dict]: ...  # corpus rows incl. image bytes, or None


def check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def corpus_dir_of(index_dir, corpus_dir=None) -> storage.Place | None:
    """The corpus behind an index: ``corpus_dir`` if given, else the embedding manifest's ``corpus``
    (a relative one is taken under the embedding directory, then the current directory). Either may
    be a URI (``s3://...``): the result is a place of :mod:`medcl.storage`, never a mangled path."""
    if corpus_dir:
        return storage.place(corpus_dir)
    manifest = read_index_manifest(index_dir)
    if not manifest.corpus:
        return None
    recorded = manifest.corpus
    if storage.is_remote(recorded) or Path(recorded).is_absolute():
        return storage.place(recorded)
    beside = storage.place(manifest.embeddings) / recorded
    return beside if storage.exists(beside) else Path(recorded)


class CorpusFetcher:
    """``fetch(ids)`` over a corpus directory (``medcl.corpus.store.CorpusStore``), opened on first use."""

    def __init__(self, corpus_dir: storage.Place | None):
        self.corpus_dir = corpus_dir
        self._store = None

    def fetch(self, ids: list[str]) -> list[dict | None]:
        """Rows for ``ids`` in order; ``None`` for a missing slot (id ``""``)."""
        if self.corpus_dir is None:
            raise FileNotFoundError("the index records no corpus directory; pass corpus_dir=")
        if self._store is None:
            from medcl.corpus.store import CorpusStore

            self._store = CorpusStore(self.corpus_dir)
        wanted = [i for i in ids if i != MISSING_ID]
        rows = iter(self._store.fetch(wanted))
        return [None if i == MISSING_ID else next(rows) for i in ids]


class LocalRetriever:
    """Every index shard of ``index_dir`` in this process: per space one FAISS index (the trained
    index, read once, holding every shard's codes; :func:`~medcl.corpus.index_load.load_space`),
    searched once per query batch; ids and captions are looked up for the top-k only.

    ``model``: a :class:`medcl.models.ModelBundle` (or :class:`medcl.corpus.encoder.TextEncoder`) for
    :meth:`search_text`; by default the index's own model, built on first use.

    ``index_dir`` and ``corpus_dir`` may be URIs (``s3://...``): the index is downloaded once per
    node into the node's cache (:func:`~medcl.corpus.index.local_index_dir`) and loaded from there;
    captions and images are read from the corpus place directly.
    """

    def __init__(self, index_dir, *, corpus_dir=None, model=None):
        self.location = storage.place(index_dir)
        self.index_dir = local_index_dir(self.location)
        self.manifest = read_index_manifest(self.index_dir)
        self._spaces = {space: load_space(self.index_dir, space) for space in self.manifest.spaces}
        self._rows = {space: RowMap(self.index_dir, self.manifest, space) for space in self.manifest.spaces}
        self._fetcher = CorpusFetcher(corpus_dir_of(self.index_dir, corpus_dir))
        self._encoder = model

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def search(self, queries: np.ndarray, k: int, *, space: str = "text") -> SearchResult:
        return SearchResult.from_hits(self.search_hits(queries, k, space=space))

    def search_hits(self, queries: np.ndarray, k: int, *, space: str = "text") -> Hits:
        k, queries = check_k(k), check_queries(queries, self.dim)
        if space not in self._spaces:
            raise ValueError(f"space {space!r} is not indexed in {self.location} "
                             f"(spaces: {', '.join(self._spaces)})")
        if not self._spaces[space].rows:
            return Hits.empty(len(queries), k)
        return self._rows[space].hits(*self._spaces[space].search(queries, k))

    def search_text(self, texts: list[str], k: int, *, space: str = "text") -> SearchResult:
        return self.search(self.encode(texts), k, space=space)

    def encode(self, texts: list[str]) -> np.ndarray:
        from medcl.corpus.encoder import TextEncoder

        if not isinstance(self._encoder, TextEncoder):
            self._encoder = TextEncoder(self.manifest.model, bundle=self._encoder)
        return self._encoder(texts)

    def fetch(self, ids: list[str]) -> list[dict]:
        return self._fetcher.fetch(ids)
