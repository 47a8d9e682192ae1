"""Top-k merge across shards: order by score then id, padding, and equality with one exact index."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from medcl.corpus.index import build_index
from medcl.corpus.merge import Hits, merge_topk
from medcl.corpus.retrieval import LocalRetriever
from medcl.corpus.synthetic_vectors import clustered_vectors, write_embedding_dir


def _hits(scores, ids):
    ids = np.array(ids, dtype=object)
    return Hits(np.array(scores, np.float32), ids, ids.copy(), np.full(ids.shape, "ct", dtype=object))


def test_merge_orders_by_score_then_id_whatever_the_shard_order():
    a = _hits([[0.9, 0.5]], [["a:2", "a:1"]])
    b = _hits([[0.9, 0.7]], [["a:0", "b:9"]])
    for parts in ([a, b], [b, a]):
        merged = merge_topk(parts, 3)
        assert merged.ids.tolist() == [["a:0", "a:2", "b:9"]]
        np.testing.assert_allclose(merged.scores, [[0.9, 0.9, 0.7]])
        assert merged.captions.tolist() == merged.ids.tolist()  # captions travel with their ids


def test_merge_pads_missing_slots_with_empty_id_and_minus_infinity():
    a = _hits([[0.3, -np.inf]], [["x", ""]])
    merged = merge_topk([a, _hits([[0.8]], [["y"]])], 4)
    assert merged.ids.tolist() == [["y", "x", "", ""]]
    assert np.isneginf(merged.scores[0, 2:]).all() and merged.scores.dtype == np.float32
    with pytest.raises(ValueError, match="k must be"):
        merge_topk([a], 0)


def test_sharded_exact_search_equals_one_exact_index_over_all_rows(tmp_path):
    rows, dim, k = 900, 16, 10
    write_embedding_dir(tmp_path / "emb", rows=rows, dim=dim, shards=3, clusters=20, seed=3)
    build_index(tmp_path / "emb", tmp_path / "index", factory="flat", space="text", log=lambda _: None)
    retriever = LocalRetriever(tmp_path / "index")
    everything = clustered_vectors(rows, dim, clusters=20, seed=3)  # the same vectors, in id order
    exact = faiss.IndexFlatIP(dim)
    exact.add(everything)
    queries = clustered_vectors(40, dim, clusters=20, seed=99)
    want_scores, want_rows = exact.search(queries, k)
    got = retriever.search(queries, k)
    assert got.scores.shape == (40, k)
    assert got.ids == [[f"syn:{i:06d}" for i in row] for row in want_rows]
    np.testing.assert_allclose(got.scores, want_scores, rtol=1e-5, atol=1e-6)
    assert all(np.all(np.diff(row) <= 0) for row in got.scores)
