"""``build_index`` on Ray with the embeddings and the index in an object store (moto S3 on
127.0.0.1), and the retrieval service started on the index URI: the training and fill tasks write
in their own scratch folders and upload (the files equal a local build's), and the shard actors of
one node load one cached copy of the index and answer as ``LocalRetriever`` on the local build.

Ray runs inside the moto environment (``ray_in_s3_env``), so its workers reach the bucket as the
nodes of a real cluster do with their own credentials.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, ray_in_s3_env, s3  # noqa: E402,F401  (fixtures: moto S3, Ray in its environment)

from medcl.publish import resolve
from medcl import storage  # noqa: E402
from medcl.corpus.index import build_index, local_index_dir  # noqa: E402
from medcl.corpus.retrieval import LocalRetriever  # noqa: E402
from medcl.corpus.service import RetrievalService  # noqa: E402
from medcl.corpus.synthetic_vectors import clustered_vectors, write_embedding_dir  # noqa: E402
from medcl.storage import Location  # noqa: E402

pytestmark = pytest.mark.ray
DIM = 16


def test_ray_build_into_s3_and_service_on_the_uri_answer_as_local(ray_in_s3_env, tmp_path):
    base = Location(f"s3://{BUCKET}/index-ray-{os.urandom(4).hex()}")
    write_embedding_dir(tmp_path / "emb", rows=800, dim=DIM, shards=4, image_every=2, clusters=20, seed=2)
    storage.upload_dir(tmp_path / "emb", base / "emb")
    quiet = dict(factory="ivf", train_sample=None, log=lambda _: None)
    local = build_index(tmp_path / "emb", tmp_path / "idx", use_ray=False, **quiet)
    remote = build_index(base / "emb", base / "idx", use_ray=True, **quiet)
    assert remote.files == local.files and not Path("s3:").exists()
    queries = clustered_vectors(25, DIM, clusters=20, seed=2, draw=1)
    want = LocalRetriever(tmp_path / "idx").search(queries, 10)
    service = RetrievalService.start(str(base / "idx"), name="test-index-s3", shards=2)
    try:
        assert service.layout["index_dir"] == str(resolve(base / "idx"))  # pinned to the version served
        got = service.search(queries, 10)
        assert got.ids == want.ids and got.captions == want.captions
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
        copies = {replica["index_dir"] for row in service.info() for replica in row}
        assert copies == {str(local_index_dir(base / "idx"))}, "one cached copy per node, shared by its actors"
    finally:
        service.stop()
