"""Corpus locations as places of medcl.storage: the Parquet helpers (parquet_io.py), ``--run`` naming
a run directory in an object store (moto S3 on 127.0.0.1), and the refusal of a node-local ``--out``,
CORPUS_DIR or weights file on a multi-node cluster before anything is written (the cluster is faked:
two alive nodes, one of which does not see the path; the end-to-end S3 build and embed is
tests/integration/test_corpus_s3.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from medcl import storage
from medcl.cli import main
from medcl.corpus import parquet_io
from medcl.hashing import sha256_file
from medcl.storage import Location

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the moto server fixture)


def test_parquet_helpers_write_read_and_stream_a_local_place(tmp_path):
    table = pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    parquet_io.write_table(table, tmp_path / "new" / "sub" / "x.parquet")  # parents made
    assert parquet_io.read_table(tmp_path / "new" / "sub" / "x.parquet", columns=["id"])["id"].to_pylist() == ["a", "b", "c"]
    batches = list(parquet_io.parquet_file(str(tmp_path / "new" / "sub" / "x.parquet")).iter_batches(batch_size=2))
    assert [b.num_rows for b in batches] == [2, 1]
    with pytest.raises(FileNotFoundError, match="missing.parquet: no such file"):
        parquet_io.read_table(tmp_path / "missing.parquet")


def test_ray_parquet_source_gives_paths_in_one_filesystem(tmp_path):
    from pyarrow import fs

    paths, keywords = parquet_io.ray_parquet_source([str(tmp_path / "a.parquet"), tmp_path / "b.parquet"])
    assert paths == [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    assert isinstance(keywords["filesystem"], fs.LocalFileSystem)
    assert parquet_io.ray_parquet_source([]) == ([], {})
    with pytest.raises(ValueError, match="different stores"):
        parquet_io.ray_parquet_source([tmp_path / "a.parquet", Location("s3://bucket/b.parquet")])


@pytest.fixture
def two_nodes_one_blind(monkeypatch):
    """A connected 'cluster' of two alive nodes; the second never sees the probed path."""
    from medcl.commands import corpus as corpus_command
    from medcl.engine import shared

    monkeypatch.setattr(corpus_command, "_connect", lambda: None)
    monkeypatch.setattr(shared, "alive_nodes", lambda: [{"NodeID": "a" * 16}, {"NodeID": "b" * 16}])
    monkeypatch.setattr(shared, "_nodes_not_seeing", lambda marker, nodes: ["10.0.0.3 (bbbbbbbb)"])


def test_a_node_local_out_is_refused_on_a_multi_node_cluster(two_nodes_one_blind, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"sources": [{"type": "synthmed", "per_class": 1, "limit": 2}]}))
    assert main(["corpus", "build", str(spec), "--out", str(tmp_path / "corpus")]) == 2
    err = capsys.readouterr().err
    assert f"--out: {tmp_path / 'corpus'} is a node-local path" in err and "10.0.0.3" in err
    assert "e.g. --out s3://BUCKET/corpus" in err and "shared mount" in err
    assert not list((tmp_path / "corpus").glob("part-*")) and not (tmp_path / "corpus" / "manifest.json").exists()

    assert main(["corpus", "embed", str(tmp_path / "corpus"), "--out", str(tmp_path / "emb"),
                 "--model", "medcl-tiny"]) == 2
    assert f"CORPUS_DIR: {tmp_path / 'corpus'} is a node-local path" in capsys.readouterr().err
    assert not (tmp_path / "emb").exists()


def test_a_node_local_index_build_is_refused_on_a_multi_node_cluster(two_nodes_one_blind, tmp_path, capsys,
                                                                      monkeypatch):
    from medcl.corpus.synthetic_vectors import write_embedding_dir
    from medcl.engine import cluster

    monkeypatch.setattr(cluster, "connect", lambda: None)
    emb = write_embedding_dir(tmp_path / "emb", rows=40, dim=8, clusters=4)
    assert main(["index", "build", str(emb), "--out", str(tmp_path / "index")]) == 2
    err = capsys.readouterr().err
    assert f"EMB_DIR: {emb} is a node-local path" in err and "10.0.0.3" in err
    assert not (tmp_path / "index").exists()  # refused before the --out probe created it

    from medcl.engine import shared  # every node sees EMB_DIR, one does not see --out
    monkeypatch.setattr(shared, "_nodes_not_seeing",
                        lambda path, nodes: ["10.0.0.3 (bbbbbbbb)"] if ".medcl-shared-" in path else [])
    assert main(["index", "build", str(emb), "--out", str(tmp_path / "index")]) == 2
    err = capsys.readouterr().err
    assert f"--out: {tmp_path / 'index'} is a node-local path" in err and "e.g. --out s3://BUCKET/index" in err
    assert not (tmp_path / "index" / "index.json").exists() and not list((tmp_path / "index").iterdir())


def test_an_object_store_out_is_not_probed(two_nodes_one_blind, monkeypatch):
    from medcl.commands.corpus import _check_shared
    from medcl.engine import shared

    monkeypatch.setattr(shared, "alive_nodes", lambda: pytest.fail("a URI needs no probe"))
    _check_shared("s3://bucket/corpus", "--out", output=True)  # shared by construction: no error


def test_a_weights_file_some_node_lacks_is_refused_before_embedding(two_nodes_one_blind, tmp_path, capsys, monkeypatch):
    from medcl.engine import shared

    blind = ["10.0.0.3 (bbbbbbbb)"]
    monkeypatch.setattr(shared, "_nodes_not_seeing", lambda path, nodes: blind if path.endswith(".safetensors") else [])
    (tmp_path / "corpus").mkdir()
    weights = tmp_path / "w" / "model.safetensors"
    assert main(["corpus", "embed", str(tmp_path / "corpus"), "--out", str(tmp_path / "emb"), "--model", "medcl-tiny",
                 "--pretrained", str(weights)]) == 2
    err = capsys.readouterr().err
    assert f"--pretrained: {weights} is a node-local path" in err and "shared mount" in err
    assert not (tmp_path / "emb").exists()


def test_model_from_a_run_directory_in_an_object_store(s3, tmp_path, monkeypatch):
    """``--run s3://.../runs/NAME``: config.yaml and the newest task checkpoint's weights, read from the
    bucket; the weights URI is what every model actor loads (through its node's cache)."""
    from medcl.corpus.embed import ModelInfo, load_bundle, model_from_run
    from medcl.models import save_weights, state_fingerprint

    monkeypatch.setenv("MEDCL_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "run"
    (local / "checkpoints" / "task-1").mkdir(parents=True)
    (local / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "medcl-tiny"}}))
    bundle = load_bundle(ModelInfo("medcl-tiny", seed=5))
    save_weights(bundle.model, local / "checkpoints" / "task-1" / "model.safetensors")
    weights = local / "checkpoints" / "task-1" / "model.safetensors"
    (local / "checkpoints" / "task-1" / "manifest-rank0.json").write_text(json.dumps({weights.name: sha256_file(weights)}))
    run = f"s3://{BUCKET}/runs/embed-from"
    storage.upload_dir(local, run)
    info = model_from_run(run)
    assert info.pretrained == f"{run}/checkpoints/task-1/model.safetensors"
    assert state_fingerprint(load_bundle(info).model) == state_fingerprint(bundle.model)
