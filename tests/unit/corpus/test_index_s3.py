"""Index directories in an object store (moto S3 on 127.0.0.1): ``build_index`` from embeddings in
S3 into S3, ``LocalRetriever`` on the URI answering exactly as on the local build, the node cache
(one download per node, shared by concurrent loaders, a rebuilt index fetched again), ``medcl index
build/query`` with URIs, a corpus in S3 behind an index in S3, and PRIMED's URI params."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from medcl.publish import resolve
from medcl import storage, storage_dirs
from medcl.cli import main
from medcl.corpus.index import build_index, local_index_dir, read_index_manifest
from medcl.corpus.retrieval import LocalRetriever, corpus_dir_of
from medcl.corpus.synthetic_vectors import clustered_vectors, write_embedding_dir
from medcl.storage import Location

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the moto server fixture)

ROWS, DIM = 600, 16


def _prefix(name: str) -> Location:
    return Location(f"s3://{BUCKET}/index-{name}-{os.urandom(4).hex()}")


@pytest.fixture
def downloads(monkeypatch, tmp_path):
    """A fresh node cache (``$MEDCL_CACHE``) and the list of directory downloads made into it."""
    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    calls, original = [], storage.download_dir

    def counted(value, local):
        calls.append(str(value))
        return original(value, local)
    monkeypatch.setattr(storage, "download_dir", counted)
    return calls


@pytest.fixture(scope="module")
def built(s3, tmp_path_factory):
    """The same embeddings indexed locally and, read from S3, into S3 (IVF: codes + trained index)."""
    root = tmp_path_factory.mktemp("emb")
    write_embedding_dir(root / "emb", rows=ROWS, dim=DIM, shards=2, image_every=3, clusters=20, seed=1)
    base = _prefix("built")
    storage.upload_dir(root / "emb", base / "emb")
    quiet = dict(factory="ivf", train_sample=None, use_ray=False, log=lambda _: None)
    local = build_index(root / "emb", root / "idx", **quiet)
    remote = build_index(base / "emb", base / "idx", **quiet)
    return {"local": root / "idx", "remote": base / "idx", "manifests": (local, remote)}


def test_build_from_s3_into_s3_writes_the_same_index(built):
    local, remote = built["manifests"]
    assert remote.embeddings == str(built["remote"].parent / "emb")  # the URI, not a folder named s3:
    assert remote.files == local.files  # every file byte for byte (sha256) as the local build
    names = storage.listdir(resolve(built["remote"]))  # the published version (medcl.publish)
    assert "index.json" in names and "text-trained.faiss" in names and "text-ids" in names
    assert read_index_manifest(built["remote"], verify=True).shards == local.shards


def test_retriever_on_the_uri_answers_as_the_local_index_and_downloads_once(built, downloads):
    queries = clustered_vectors(30, DIM, clusters=20, seed=1, draw=1)
    here = LocalRetriever(built["local"])
    first = LocalRetriever(str(built["remote"]))
    for space in ("text", "image"):
        want, got = here.search(queries, 10, space=space), first.search(queries, 10, space=space)
        assert got.ids == want.ids and got.captions == want.captions
        np.testing.assert_array_equal(got.scores, want.scores)
    assert downloads == [str(resolve(built["remote"]))]
    second = LocalRetriever(built["remote"])  # another loader on this node: the cached copy
    assert downloads == [str(resolve(built["remote"]))] and second.index_dir == first.index_dir
    assert first.index_dir.is_relative_to(Path(os.environ["MEDCL_CACHE"]))
    with pytest.raises(ValueError, match=rf"space 'both' is not indexed in {built['remote']}"):
        first.search(queries, 3, space="both")


def test_concurrent_loaders_on_one_node_share_one_complete_copy(built, downloads):
    barrier, results, original = threading.Barrier(3), [], storage_dirs.storage.download_dir

    def racing(value, local):  # every loader has downloaded before any renames
        original(value, local)
        barrier.wait(timeout=60)
    storage_dirs.storage.download_dir = racing
    try:
        threads = [threading.Thread(target=lambda: results.append(local_index_dir(built["remote"]))) for _ in range(3)]
        [t.start() for t in threads]
        [t.join(timeout=120) for t in threads]
    finally:
        storage_dirs.storage.download_dir = original
    assert len(results) == 3 and len(set(results)) == 1 and len(downloads) == 3  # three copies, one kept
    cache = Path(os.environ["MEDCL_CACHE"])
    assert [p.name for p in cache.iterdir()] == [results[0].name], "no partial copies left behind"
    read_index_manifest(results[0], verify=True)  # whole: every file's sha256 matches


def test_a_rebuilt_index_at_the_same_uri_is_fetched_again(s3, tmp_path, downloads):
    where = _prefix("rebuilt")
    write_embedding_dir(tmp_path / "emb", rows=40, dim=8, shards=1, image_every=None)
    build_index(tmp_path / "emb", where, factory="flat", use_ray=False, log=lambda _: None)
    old = local_index_dir(where)
    assert local_index_dir(where) == old and len(downloads) == 1
    build_index(tmp_path / "emb", where, factory="hnsw", space="text", use_ray=False, log=lambda _: None)
    new = local_index_dir(where)
    assert new != old and len(downloads) == 2 and read_index_manifest(new).factory == "hnsw"
    missing = _prefix("missing")
    with pytest.raises(FileNotFoundError, match=rf"{missing}: no index.json"):
        local_index_dir(missing)


def test_cli_builds_into_s3_and_queries_the_uri(s3, tmp_path, downloads, capsys):
    model = {"name": "medcl-tiny", "pretrained": None, "fingerprint": None, "seed": 0}
    write_embedding_dir(tmp_path / "emb", rows=80, dim=64, shards=2, image_every=2, clusters=8, model=model)
    emb, out = _prefix("cli-emb"), _prefix("cli")
    storage.upload_dir(tmp_path / "emb", emb)
    assert main(["index", "build", str(emb), "--out", str(out), "--local", "--factory", "flat"]) == 0
    assert f"in {out}" in capsys.readouterr().out and not Path("s3:").exists()
    assert main(["index", "build", str(tmp_path / "emb"), "--out", str(tmp_path / "idx"), "--local",
                 "--factory", "flat"]) == 0
    capsys.readouterr()
    assert main(["index", "query", str(out), "synthetic caption", "-k", "3"]) == 0
    remote = capsys.readouterr().out.splitlines()
    assert main(["index", "query", str(tmp_path / "idx"), "synthetic caption", "-k", "3"]) == 0
    assert remote == capsys.readouterr().out.splitlines() and len(remote) == 4
    assert downloads == [str(resolve(out))]


def test_a_corpus_in_s3_is_fetched_behind_an_index_in_s3(s3, tmp_path, downloads):
    from medcl.corpus.build import build_corpus
    from medcl.corpus.embed import ModelInfo, embed_corpus
    from medcl.corpus.spec import validate_spec

    base = _prefix("corpus")
    build_corpus(validate_spec({"sources": [{"type": "synthmed", "per_class": 1, "limit": 6}]}), base / "corpus",
                 use_ray=False)
    embed_corpus(base / "corpus", base / "emb", ModelInfo("medcl-tiny"), batch_size=8, use_ray=False)
    build_index(base / "emb", base / "idx", factory="flat", use_ray=False, log=lambda _: None)
    assert corpus_dir_of(str(base / "idx")) == base / "corpus"
    assert corpus_dir_of(base / "idx", str(base / "corpus")) == base / "corpus"
    retriever = LocalRetriever(str(base / "idx"))
    result = retriever.search_text(["an x-ray"], 3)
    rows = retriever.fetch(result.ids[0])
    assert [r["id"] for r in rows] == result.ids[0] and [r["caption"] for r in rows] == result.captions[0]
    assert all(r["image"].startswith(b"\x89PNG") for r in rows)


def test_primed_params_keep_uris_and_fingerprint_the_index_in_s3(built, monkeypatch, tmp_path):
    from medcl.config import strategy_params, validate_experiment
    from medcl.engine import shared
    from medcl.primed.planner import plan_fingerprint

    monkeypatch.chdir(tmp_path)
    config = validate_experiment({"name": "run", "strategy": {"name": "primed", "index_dir": str(built["remote"]),
                                                              "corpus_dir": f"s3://{BUCKET}/some/corpus"}})
    params = strategy_params(config)
    assert params.index_dir == str(built["remote"]) and params.corpus_dir == f"s3://{BUCKET}/some/corpus"
    monkeypatch.setattr(shared, "alive_nodes", lambda: pytest.fail("a URI must not be probed on the nodes"))
    shared.check_shared(params.index_dir, field="strategy.index_dir", output=False)
    fingerprint = plan_fingerprint([], params, seed=0, model={}, mode="offline")
    current = resolve(built["remote"]) / "index.json"
    storage.write_text(current, storage.read_text(current) + "\n")
    try:
        assert plan_fingerprint([], params, seed=0, model={}, mode="offline") != fingerprint  # index_sha read
    finally:
        storage.write_text(current, storage.read_text(current)[:-1])
    assert not (tmp_path / "s3:").exists()
