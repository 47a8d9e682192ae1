"""Index shards stored as FAISS standalone codes: one trained index per space on disk, codes appended
back without re-encoding, bytes per vector, partial loading, and old index directories."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from medcl.publish import resolve
from medcl.corpus.index import build_index, read_index_manifest
from medcl.corpus.index_codes import add_codes, encode, has_codes
from medcl.corpus.index_load import load_space
from medcl.corpus.retrieval import LocalRetriever
from medcl.corpus.synthetic_vectors import clustered_vectors, write_embedding_dir
from medcl.hashing import sha256_file

DIM = 16


@pytest.fixture(scope="module")
def vectors():
    return clustered_vectors(3000, DIM, clusters=40, seed=3)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,PQ4x4", "OPQ4,IVF8,PQ4x4", "IVF8,PQ4x4,Refine(SQ8)",
                                     "OPQ4,IVF8,PQ4x4,RFlat"])
def test_codes_added_back_in_parts_equal_adding_the_vectors(vectors, factory):
    faiss.omp_set_num_threads(1)
    trained = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    trained.train(vectors)
    assert has_codes(trained)
    direct = faiss.clone_index(trained)
    direct.add(vectors)
    rebuilt = faiss.deserialize_index(faiss.serialize_index(trained))
    for part in np.array_split(np.arange(len(vectors)), 3):
        add_codes(rebuilt, encode(trained, vectors[part]))
    assert rebuilt.ntotal == direct.ntotal == len(vectors)
    for index in (direct, rebuilt):
        if faiss.try_extract_index_ivf(index) is not None:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", 3)
    queries = clustered_vectors(40, DIM, clusters=40, seed=3, draw=1)
    want, got = direct.search(queries, 10), rebuilt.search(queries, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_hnsw_has_no_codes_and_wrong_code_width_is_refused(vectors):
    assert not has_codes(faiss.index_factory(DIM, "HNSW8", faiss.METRIC_INNER_PRODUCT))
    flat = faiss.index_factory(DIM, "Flat", faiss.METRIC_INNER_PRODUCT)
    with pytest.raises(ValueError, match=r"\(n, 64\) uint8 standalone codes"):
        add_codes(flat, np.zeros((2, 9), np.uint8))


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    return write_embedding_dir(tmp_path_factory.mktemp("emb"), rows=4000, dim=DIM, shards=4, image_every=None,
                               clusters=50, seed=1)


@pytest.fixture(scope="module")
def pq_index(emb_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "pq"
    build_index(emb_dir, out, factory="IVF32,PQ4x4", space="text", train_sample=2_000, use_ray=False,
                log=lambda _: None)
    return out


def test_quantizer_is_stored_once_and_a_shard_costs_code_size_plus_8_bytes_per_vector(pq_index):
    pq_index = resolve(pq_index)  # the published version's folder (medcl.publish)
    manifest = read_index_manifest(pq_index, verify=True)
    assert manifest.format == 2 and manifest.trained["text"]["file"] == "text-trained.faiss"
    assert sorted(p.name for p in pq_index.glob("*.faiss")) == ["text-trained.faiss"]
    trained = faiss.read_index(str(pq_index / "text-trained.faiss"))
    assert trained.ntotal == 0 and trained.sa_code_size() == 1 + 2  # list number (32 lists) + 4 x 4-bit PQ
    for entry in manifest.entries("text"):
        codes = np.load(pq_index / entry["codes"])
        labels = np.load(pq_index / entry["labels"])
        assert codes.shape == (entry["rows"], 3) and codes.dtype == np.uint8
        np.testing.assert_array_equal(labels, entry["offset"] + np.arange(entry["rows"]))
        on_disk = (pq_index / entry["codes"]).stat().st_size + (pq_index / entry["labels"]).stat().st_size
        assert on_disk <= entry["rows"] * (3 + 8) + 2 * 128  # + two .npy headers


def test_a_subset_of_shards_loads_into_one_index_and_merging_subsets_equals_all(pq_index):
    from medcl.corpus.merge import merge_labels

    queries = clustered_vectors(30, DIM, clusters=50, seed=1, draw=1)
    everything = load_space(pq_index, "text")
    halves = [load_space(pq_index, "text", numbers={0, 2}), load_space(pq_index, "text", numbers={1, 3})]
    assert everything.whole == [] and everything.combined.ntotal == 4000  # one index, not one per shard
    assert [h.rows for h in halves] == [2000, 2000] and halves[0].combined.ntotal == 2000
    scores, labels = everything.search(queries, 10)
    merged_scores, merged_labels = merge_labels([h.search(queries, 10) for h in halves], 10)
    np.testing.assert_allclose(merged_scores, scores, rtol=1e-6, atol=1e-6)
    for row in range(len(queries)):  # equal scores may swap places; above the k-th score the sets agree
        above = scores[row] > scores[row, -1]
        assert set(merged_labels[row][above]) == set(labels[row][above])
    assert set(np.unique(halves[0].search(queries, 10)[1]) // 1000) <= {0, 2}  # shard n holds labels n*1000..


def _as_old_format(index_dir):
    """Rewrite a codes index directory as the builder before the codes format wrote it: one whole
    .faiss file per shard (each with its own copy of the quantizer), no format/trained keys, no
    versions (its files at the top, as before medcl.publish)."""
    import shutil

    version = resolve(index_dir)
    for path in version.iterdir():
        shutil.move(path, index_dir / path.name)
    version.rmdir()
    (index_dir / "CURRENT").unlink()
    body = json.loads((index_dir / "index.json").read_text())
    trained = faiss.read_index(str(index_dir / "text-trained.faiss"))
    for entry in body["shards"]:
        whole = faiss.clone_index(trained)
        add_codes(whole, np.load(index_dir / entry["codes"]))
        entry["index"] = f"text-{entry['shard']:05d}.faiss"
        faiss.write_index(whole, str(index_dir / entry["index"]))
        for key in ("codes", "labels"):
            (index_dir / entry.pop(key)).unlink()
        body["files"][entry["index"]] = sha256_file(index_dir / entry["index"])
    (index_dir / "text-trained.faiss").unlink()
    body["files"] = {name: digest for name, digest in body["files"].items() if (index_dir / name).exists()}
    del body["format"], body["trained"]
    (index_dir / "index.json").write_text(json.dumps(body))


def test_an_old_index_directory_still_loads_answers_the_same_and_says_to_rebuild(pq_index, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(pq_index, old)
    _as_old_format(old)
    queries = clustered_vectors(30, DIM, clusters=50, seed=1, draw=1)
    with pytest.warns(UserWarning, match="rebuild it with `medcl index build`"):
        answer = LocalRetriever(old).search(queries, 10)
    want = LocalRetriever(pq_index).search(queries, 10)
    np.testing.assert_allclose(answer.scores, want.scores, rtol=1e-6, atol=1e-6)
    assert read_index_manifest(old).format == 1


def test_an_index_from_a_newer_medcl_is_refused_by_name(pq_index, tmp_path):
    import shutil

    from medcl.corpus.index_factory import IndexBuildError

    newer = tmp_path / "newer"
    shutil.copytree(pq_index, newer)
    body = json.loads((resolve(newer) / "index.json").read_text())
    body["format"] = 99
    (resolve(newer) / "index.json").write_text(json.dumps(body))
    with pytest.raises(IndexBuildError, match="index format 99 is newer"):
        LocalRetriever(newer)


def test_a_refined_index_is_built_loaded_and_searched_with_its_recorded_k_factor(emb_dir, tmp_path):
    from medcl.corpus.index_build import sample_vectors
    from medcl.corpus.shards import read_manifest

    factory = "OPQ4,IVF16,PQ4x4,Refine(SQ8)"
    manifest = build_index(emb_dir, tmp_path / "refined", factory=factory, space="text", train_sample=2_000,
                           use_ray=False, log=lambda _: None)
    assert manifest.trained["text"]["params"] == {"nprobe": 16, "k_factor_rf": 8}
    loaded = load_space(tmp_path / "refined", "text")
    assert faiss.downcast_index(loaded.combined).k_factor == 8 and loaded.combined.ntotal == 4000
    direct = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    direct.train(sample_vectors(emb_dir, read_manifest(emb_dir), "text", 2_000, 0))
    direct.add(clustered_vectors(4000, DIM, clusters=50, seed=1))
    faiss.ParameterSpace().set_index_parameter(direct, "nprobe", 16)
    faiss.ParameterSpace().set_index_parameter(direct, "k_factor_rf", 8)
    queries = clustered_vectors(30, DIM, clusters=50, seed=1, draw=1)
    want, _ = direct.search(queries, 10)
    got, _ = loaded.search(queries, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the same index, trained on the same sample
