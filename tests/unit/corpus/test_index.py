"""FAISS index shards: default factories reach recall, small shards fall back, spaces, manifest checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medcl.publish import resolve
from medcl.corpus.index import INDEX_MANIFEST, build_index, read_index_manifest
from medcl.corpus.index_factory import IndexBuildError, auto_factory, default_train_sample, resolve_factory
from medcl.corpus.retrieval import LocalRetriever
from medcl.corpus.schema import CorruptArtifactError
from medcl.corpus.synthetic_vectors import clustered_vectors, write_embedding_dir

ROWS, DIM = 6000, 32


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    return write_embedding_dir(tmp_path_factory.mktemp("emb"), rows=ROWS, dim=DIM, shards=2, image_every=3,
                               clusters=100, noise=1.0, seed=0)


def _recall(got: list[list[str]], want: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want)]))


@pytest.mark.parametrize("factory", ["ivf", "hnsw"])
def test_default_factories_reach_recall_at_10_on_small_shards(emb_dir, tmp_path, factory):
    log = []
    manifest = build_index(emb_dir, tmp_path / factory, factory=factory, space="text", log=log.append)
    build_index(emb_dir, tmp_path / "flat", factory="flat", space="text", log=lambda _: None)
    queries = clustered_vectors(200, DIM, clusters=100, noise=1.0, seed=0, draw=1)  # unseen, same clusters
    got = LocalRetriever(tmp_path / factory).search(queries, 10)
    want = LocalRetriever(tmp_path / "flat").search(queries, 10)
    assert _recall(got.ids, want.ids) >= 0.95
    text = manifest.entries("text")
    if factory == "ivf":  # one index over 6000 rows: 4*sqrt(6000)=310 lists > 6000/39, so capped and reported
        assert [e["factory"] for e in text] == ["IVF153,Flat", "IVF153,Flat"]
        assert [e["offset"] for e in text] == [0, 3000] and text[0]["params"] == {"nprobe": 20}
        assert any("at most 153 lists" in line for line in log)
    else:
        assert text[0]["factory"] == "HNSW32" and text[0]["params"] == {"efSearch": 128}


def test_image_space_holds_only_rows_with_an_image(emb_dir, tmp_path):
    manifest = build_index(emb_dir, tmp_path / "idx", factory="flat", log=lambda _: None)
    assert [e["rows"] for e in manifest.entries("text")] == [3000, 3000]
    assert [e["rows"] for e in manifest.entries("image")] == [1000, 1000]  # every third row has an image
    result = LocalRetriever(tmp_path / "idx").search(clustered_vectors(20, DIM, clusters=100, draw=1), 50, space="image")
    assert all(int(i.split(":")[1]) % 3 == 0 for row in result.ids for i in row)


def test_text_only_shard_gets_an_empty_image_entry(tmp_path):
    write_embedding_dir(tmp_path / "emb", rows=40, dim=8, shards=1, image_every=None)  # like ROCO: no images
    log = []
    manifest = build_index(tmp_path / "emb", tmp_path / "idx", factory="ivf", log=log.append)
    assert manifest.entries("text")[0]["factory"] == "Flat"  # 40 rows: too few for an IVF
    assert manifest.entries("image")[0]["rows"] == 0 and manifest.entries("image")[0]["codes"] is None
    assert any("nothing to index" in line for line in log)
    retriever = LocalRetriever(tmp_path / "idx")
    assert retriever.search(clustered_vectors(2, 8), 3).ids[0][0].startswith("syn:")
    result = retriever.search(clustered_vectors(2, 8), 3, space="image")
    assert result.ids == [["", "", ""]] * 2 and np.isneginf(result.scores).all()


@pytest.mark.parametrize("target", ["text-00001.codes.npy", "text-00000.labels.npy", "text-trained.faiss",
                                    "image-ids/part-00000.parquet", INDEX_MANIFEST])
def test_changed_index_file_is_detected_and_named(emb_dir, tmp_path, target):
    build_index(emb_dir, tmp_path / "idx", factory="flat", log=lambda _: None)
    path = resolve(tmp_path / "idx") / target  # the published version (medcl.publish)
    data = bytearray(path.read_bytes())
    if target == INDEX_MANIFEST:
        body = json.loads(data)
        body["files"]["text-00000.codes.npy"] = "0" * 64
        path.write_text(json.dumps(body))
        target = "text-00000.codes.npy"
    else:
        data[len(data) // 2] ^= 0xFF  # flip one byte
        path.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match=target):
        LocalRetriever(tmp_path / "idx")
    with pytest.raises(CorruptArtifactError, match=target):
        read_index_manifest(tmp_path / "idx", verify=True)


def test_factory_fallbacks_and_errors():
    pq = resolve_factory("IVF256,PQ8", rows=5000, dim=32, sample=5000)
    assert pq.factory == "IVF128,Flat" and len(pq.notes) == 2  # lists capped, PQ codebooks need 9984 vectors
    big = resolve_factory("IVF256,PQ8", rows=20000, dim=32, sample=20000, nprobe=4)
    assert big.factory == "IVF256,PQ8" and big.notes == [] and big.params == {"nprobe": 4}
    assert resolve_factory("ivf", rows=10**6, dim=32, sample=10**5).factory == "IVF2564,Flat"
    refined = resolve_factory("OPQ8,IVF256,PQ8,Refine(SQ8)", rows=10**5, dim=32, sample=10**5)
    assert refined.params == {"nprobe": 32, "k_factor_rf": 8}  # the refine stage re-ranks k * 8 candidates
    assert auto_factory(24_250, 512) == "IVF623,Flat"
    assert auto_factory(10**6, 512) == "OPQ128,IVF16384,PQ128,Refine(SQ8)"
    assert auto_factory(18 * 10**6, 512) == "OPQ64,IVF65536,PQ64,Refine(SQ8)"
    assert auto_factory(10**6, 60) == "OPQ15,IVF16384,PQ15,Refine(SQ8)"
    assert default_train_sample("OPQ64,IVF65536,PQ64,Refine(SQ8)", 18 * 10**6, 10**5) == 39 * 65536
    with pytest.raises(IndexBuildError, match="'IVF64,Bogus'"):
        resolve_factory("IVF64,Bogus", rows=10**5, dim=32, sample=10**5)
    with pytest.raises(IndexBuildError, match="divisible by 5"):
        resolve_factory("PQ5", rows=10**5, dim=32, sample=10**5)
    with pytest.raises(IndexBuildError, match="--nprobe must be >= 1"):
        resolve_factory("ivf", rows=10**5, dim=32, sample=10**5, nprobe=0)


def test_shards_share_one_trained_quantizer_and_equal_one_index(tmp_path):
    """Trained once on a sample across shards, filled shard by shard: the merged search of the
    shards answers exactly what one index holding every vector answers (IVF + PQ codes)."""
    import faiss

    from medcl.corpus.index_build import sample_vectors
    from medcl.corpus.shards import read_manifest

    rows, dim = 4_000, 16
    write_embedding_dir(tmp_path / "emb", rows=rows, dim=dim, shards=3, image_every=None, clusters=50, seed=1)
    manifest = build_index(tmp_path / "emb", tmp_path / "idx", factory="IVF32,PQ4x4", space="text",
                           train_sample=2_000, use_ray=False, log=lambda _: None)
    assert {e["factory"] for e in manifest.entries("text")} == {"IVF32,PQ4x4"}
    one = faiss.index_factory(dim, "IVF32,PQ4x4", faiss.METRIC_INNER_PRODUCT)
    one.train(sample_vectors(tmp_path / "emb", read_manifest(tmp_path / "emb"), "text", 2_000, 0))
    one.add(clustered_vectors(rows, dim, clusters=50, seed=1))
    one.nprobe = manifest.entries("text")[0]["params"]["nprobe"]
    queries = clustered_vectors(50, dim, clusters=50, seed=1, draw=1)
    want_scores, want_rows = one.search(queries, 10)
    got = LocalRetriever(tmp_path / "idx").search(queries, 10)
    np.testing.assert_allclose(got.scores, want_scores, rtol=1e-5, atol=1e-5)
    hits = [[int(i.split(":")[1]) for i in row] for row in got.ids]
    assert np.mean([len(set(h) & set(w)) / 10 for h, w in zip(hits, want_rows.tolist())]) > 0.98  # ties may swap
