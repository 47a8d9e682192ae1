"""``medcl corpus build`` and ``medcl corpus embed`` with every location in an object store (moto S3
on 127.0.0.1): Ray Data's tasks write and hash the shards in the bucket, the manifests are read back
and verified from it, a changed object is named, and the in-process embedding reads the same
corpus from the bucket. Nothing is written to a local folder named ``s3:``.

Ray runs inside the moto environment (``ray_in_s3_env``) so its worker processes, which write the
shards, see the endpoint and keys, as every node of a real cluster has its own credentials.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, ray_in_s3_env, s3  # noqa: E402,F401  (fixtures: moto S3, Ray in its environment)

from medcl.publish import resolve
from medcl import storage  # noqa: E402
from medcl.cli import main  # noqa: E402
from medcl.corpus import shards  # noqa: E402
from medcl.corpus.schema import CorruptArtifactError  # noqa: E402
from medcl.corpus.store import CorpusStore  # noqa: E402

pytestmark = pytest.mark.ray


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"shard_rows": 8, "sources": [{"type": "synthmed", "per_class": 1, "limit": 12}]}))
    return path


def test_build_and_embed_into_s3_read_back_and_verified(ray_in_s3_env, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus, emb = f"s3://{BUCKET}/corpus-s3", f"s3://{BUCKET}/emb-s3"
    assert main(["corpus", "build", str(_spec_file(tmp_path)), "--out", corpus]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == corpus
    version = resolve(corpus)  # the published version (medcl.publish): CURRENT names it
    assert storage.listdir(corpus) == ["CURRENT", version.name]
    assert storage.listdir(version) == ["build_report.json", "manifest.json", "part-00000.parquet", "part-00001.parquet"]
    store = CorpusStore(corpus)  # every shard's sha256 checked, read from the bucket
    assert len(store) == 12 and [s.rows for s in store.manifest.shards] == [8, 4]
    assert store.fetch([store.ids()[5]])[0]["image"][:4] == b"\x89PNG"
    assert json.loads(storage.read_text(f"{version}/build_report.json"))["rows"] == 12

    assert main(["corpus", "embed", corpus, "--out", emb, "--model", "medcl-tiny", "--actors", "1",
                 "--batch-size", "4", "--shard-rows", "5"]) == 0
    manifest = shards.read_manifest(emb)  # verified against the objects
    assert [s.rows for s in manifest.shards] == [5, 5, 2] and manifest.corpus == corpus
    assert not any(name.startswith(".tmp") for name in storage.listdir(resolve(emb)))
    on_ray = shards.read_shard(emb, manifest.shards[0])
    assert on_ray["id"].to_pylist() == store.ids()[:5]

    local = f"s3://{BUCKET}/emb-local"
    assert main(["corpus", "embed", corpus, "--out", local, "--model", "medcl-tiny", "--local",
                 "--batch-size", "4", "--shard-rows", "5"]) == 0
    in_process = shards.read_shard(local, shards.read_manifest(local).shards[0])
    np.testing.assert_allclose(shards.vectors(on_ray, "text_embedding"),
                               shards.vectors(in_process, "text_embedding"), atol=1e-5)

    current = str(resolve(emb))  # the published version the manifest lists (medcl.publish)
    storage.write_bytes(f"{current}/part-00001.parquet", b"changed")
    with pytest.raises(CorruptArtifactError, match=f"{current}/part-00001.parquet: sha256 does not match"):
        shards.read_manifest(emb)
    assert not Path("s3:").exists()
