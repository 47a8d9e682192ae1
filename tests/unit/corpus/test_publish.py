"""Rebuilds that keep the last good output (medcl.publish): a failed rebuild leaves the previous
corpus, embeddings and index readable and served; a second writer is refused, naming the first;
pretraining refuses leftovers and altered shards; ``corpus embed --run`` refuses altered weights;
index readers (LocalRetriever, the service's shard actors) resolve one version, never a mix."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from medcl import publish
from medcl.cli import main
from medcl.corpus.build import build_corpus
from medcl.corpus.index import build_index
from medcl.corpus.retrieval import LocalRetriever
from medcl.corpus.schema import CorruptArtifactError
from medcl.corpus.spec import validate_spec
from medcl.corpus.store import CorpusStore
from medcl.corpus.synthetic_vectors import clustered_vectors, write_embedding_dir
from medcl.faults import InjectedFault


def _spec(per_class: int):
    return validate_spec({"shard_rows": 7, "sources": [{"type": "synthmed", "per_class": per_class, "limit": 3 * per_class}]})


def test_a_failed_rebuild_leaves_the_previous_corpus_readable(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    build_corpus(_spec(2), out, use_ray=False)
    before = CorpusStore(out).ids()
    for point in ("before_verify", "before_switch"):
        monkeypatch.setenv(publish.FAULT_VARIABLE, point)
        with pytest.raises(InjectedFault):
            build_corpus(_spec(4), out, use_ray=False)  # a different corpus, failing once fully written
        assert CorpusStore(out).ids() == before  # still verified (sha256) and whole
        assert not [n for n in os.listdir(out) if n.startswith(publish.STAGING_PREFIX)]  # no staging left
    monkeypatch.delenv(publish.FAULT_VARIABLE)
    build_corpus(_spec(4), out, use_ray=False)
    assert len(CorpusStore(out)) > len(before)


def test_an_unfinished_newer_version_never_displaces_the_last_good_one(tmp_path):
    """An object-store build killed before its switch leaves a v-* prefix newer than the good one; the
    next build keeps the version CURRENT named (the previous good one) and drops the unfinished one."""
    out = tmp_path / "corpus"
    build_corpus(_spec(2), out, use_ray=False)
    good = publish.current_version(out)
    unfinished = out / "v-99991231T000000000000Z-deadbeef"  # sorts after every real version
    unfinished.mkdir()
    (unfinished / "part-00000.parquet").write_bytes(b"cut short")
    build_corpus(_spec(4), out, use_ray=False)
    versions = sorted(n for n in os.listdir(out) if publish.is_version_name(n))
    assert versions == sorted([good, publish.current_version(out)])


def test_a_second_writer_is_refused_naming_the_first(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    holder = publish.WriterLock(out, "medcl corpus build (the first)")
    out.mkdir()
    holder.acquire()
    try:
        with pytest.raises(publish.OutputLocked, match=rf"the first.*host '{socket.gethostname()}', pid {os.getpid()}"):
            build_corpus(_spec(1), out, use_ray=False)
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({"sources": [{"type": "synthmed", "per_class": 1, "limit": 2}]}))
        assert main(["corpus", "build", str(spec), "--out", str(out), "--local"]) == 2  # the CLI: one message
    finally:
        holder.release()
    assert not (out / publish.LOCK).exists()
    build_corpus(_spec(1), out, use_ray=False)  # free again


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / publish.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                      "started": "earlier", "token": "old"}))
    build_corpus(_spec(1), tmp_path, use_ray=False)
    assert len(CorpusStore(tmp_path)) == 3
    (tmp_path / publish.LOCK).write_text(json.dumps({"host": "another-host", "pid": 1, "started": "earlier"}))
    with pytest.raises(publish.OutputLocked, match="another-host"):  # cannot be checked from here: refused
        build_corpus(_spec(1), tmp_path, use_ray=False)


def test_an_unversioned_output_is_read_as_before_then_replaced_after_the_switch(tmp_path):
    write_embedding_dir(tmp_path / "legacy", rows=30, dim=8, shards=2, image_every=None)  # files at the top
    build_index(tmp_path / "legacy", tmp_path / "idx", factory="flat", use_ray=False, log=lambda _: None)
    assert LocalRetriever(tmp_path / "idx").search(clustered_vectors(2, 8), 3).ids[0][0]
    legacy_files = set(os.listdir(tmp_path / "legacy"))
    assert publish.resolve(tmp_path / "legacy") == tmp_path / "legacy" and "manifest.json" in legacy_files


def test_pretraining_refuses_a_leftover_shard_and_an_altered_one(tmp_path):
    from medcl.pretrain.config import CorpusData
    from medcl.pretrain.corpus_plan import corpus_files

    out = tmp_path / "corpus"
    build_corpus(_spec(3), out, use_ray=False)
    data = CorpusData(path=str(out), heldout=2, image_size=8)
    version = publish.resolve(out)
    assert corpus_files(data) == [str(version / s.file) for s in CorpusStore(out).manifest.shards]
    leftover = version / "part-00099.parquet"  # a shard of a failed build, not in the manifest
    leftover.write_bytes((version / "part-00000.parquet").read_bytes())
    with pytest.raises(CorruptArtifactError, match="part-00099.parquet: not listed in manifest.json"):
        corpus_files(data)
    leftover.unlink()
    shard = version / "part-00001.parquet"
    body = bytearray(shard.read_bytes())
    body[len(body) // 2] ^= 0xFF
    shard.write_bytes(bytes(body))
    with pytest.raises(CorruptArtifactError, match="part-00001.parquet: sha256 does not match"):
        corpus_files(data)


def test_corpus_embed_run_refuses_altered_weights(tmp_path):
    from medcl.corpus.embed import ModelInfo, load_bundle, model_from_run
    from medcl.hashing import sha256_file
    from medcl.models import save_weights

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "medcl-tiny"}}))
    folder = tmp_path / "checkpoints" / "task-0"
    save_weights(load_bundle(ModelInfo("medcl-tiny", seed=1)).model, folder / "model.safetensors")
    (folder / "manifest-rank0.json").write_text(json.dumps({"model.safetensors": sha256_file(folder / "model.safetensors")}))
    assert model_from_run(tmp_path).pretrained.endswith("task-0/model.safetensors")
    save_weights(load_bundle(ModelInfo("medcl-tiny", seed=2)).model, folder / "model.safetensors")  # other weights
    with pytest.raises(CorruptArtifactError, match="model.safetensors: sha256 does not match manifest-rank0.json; the file is corrupt"):
        model_from_run(tmp_path)


def _index(tmp_path, name: str, seed: int) -> Path:
    write_embedding_dir(tmp_path / name, rows=40, dim=8, shards=2, image_every=None, seed=seed)
    return tmp_path / name


def test_index_readers_resolve_one_version_and_a_failed_rebuild_keeps_serving(tmp_path, monkeypatch):
    from medcl.corpus.service import ServiceError, ShardServer, check_pinned, manifest_digest

    first, second = _index(tmp_path, "emb1", 1), _index(tmp_path, "emb2", 2)
    out = tmp_path / "idx"
    build_index(first, out, factory="flat", use_ray=False, log=lambda _: None)
    queries = clustered_vectors(4, 8, seed=3)
    want = LocalRetriever(out).search(queries, 5)
    pinned, digest = publish.resolve(out), manifest_digest(publish.resolve(out))
    monkeypatch.setenv(publish.FAULT_VARIABLE, "before_switch")
    with pytest.raises(InjectedFault):
        build_index(second, out, factory="flat", use_ray=False, log=lambda _: None)
    monkeypatch.delenv(publish.FAULT_VARIABLE)
    assert LocalRetriever(out).search(queries, 5).ids == want.ids  # the failed rebuild changed nothing
    build_index(second, out, factory="flat", use_ray=False, log=lambda _: None)
    assert publish.resolve(out) != pinned and pinned.is_dir()  # the previous version is kept
    # a shard actor of a service started on the first version, restarted after the rebuild: the same answers
    from medcl.corpus.merge import merge_labels

    actors = [ShardServer(str(pinned), [n], manifest_sha256=digest) for n in (0, 1)]
    scores, _ = merge_labels([a.search(queries, 5, "text") for a in actors], 5)
    np.testing.assert_allclose(scores, want.scores, rtol=1e-6)
    assert LocalRetriever(out).search(queries, 5).ids != want.ids  # new readers get the new version, whole
    with pytest.raises(ServiceError, match="index.json changed"):
        check_pinned(publish.resolve(out), digest)  # an actor pointed at other files refuses to load them
