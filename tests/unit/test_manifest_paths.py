"""File names read from manifests stay inside their folder (issue 29, hostile input).

A corpus, embedding, index or checkpoint manifest that names ``../../x``, an absolute path, a link
that leads out, or (object store) a key outside its prefix is refused, naming the manifest and the
entry, before anything is read. Each hostile manifest here lists a real file outside the folder
with its true sha256 and size, so without the check it would be read and accepted as valid.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from medcl import storage
from medcl.corpus import shards as emb
from medcl.corpus.index import build_index, read_index_manifest
from medcl.corpus.schema import CorruptArtifactError
from medcl.corpus.store import CorpusStore, read_corpus_manifest, write_corpus_manifest, write_corpus_shard
from medcl.corpus.synthetic_vectors import write_embedding_dir
from medcl.engine.checkpoint import (CorruptCheckpointError, SequenceState, checkpoint_problem, latest_checkpoint,
                                     verify_checkpoint, write_checkpoint)
from medcl.hashing import sha256_file
from medcl.paths import OutsideRoot
from medcl.pretrain import checkpoint as pretrain_ckpt
from medcl.confine import inside_place
from medcl.storage import Location

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the session's moto server fixture)


def _corpus(directory: Path) -> Path:
    table = pa.table({"id": ["t:1", "t:2"], "image": [None, None], "caption": ["a", "b"], "source": ["t", "t"],
                      "modality": ["ct", "mr"], "license": ["cc-by", "cc-by"]})
    write_corpus_manifest(directory, [write_corpus_shard(directory, 0, table)], {"t": {"rows": 2}})
    return directory


def _point_first_shard_at(manifest: Path, name: str, target: Path, key: str = "shards") -> None:
    """Rewrite the manifest's first shard entry to ``name`` with ``target``'s true sha256."""
    body = json.loads(manifest.read_text())
    body[key][0]["file"] = name
    body[key][0]["sha256"] = sha256_file(target)
    manifest.write_text(json.dumps(body))


def _outside_copy(tmp_path: Path, source: Path) -> Path:
    """A real Parquet file outside the folder (what an attacker would point at)."""
    secret = tmp_path / "elsewhere" / "secret.parquet"
    secret.parent.mkdir()
    secret.write_bytes(source.read_bytes())
    return secret


@pytest.mark.parametrize("hostile", ["../elsewhere/secret.parquet", "ABSOLUTE"])
def test_corpus_manifest_naming_a_file_outside_is_refused(tmp_path, hostile):
    corpus = _corpus(tmp_path / "corpus")
    secret = _outside_copy(tmp_path, corpus / "part-00000.parquet")
    name = str(secret) if hostile == "ABSOLUTE" else hostile
    _point_first_shard_at(corpus / "manifest.json", name, secret)
    for verify in (True, False):
        with pytest.raises(CorruptArtifactError) as caught:
            read_corpus_manifest(corpus, verify=verify)
        assert "manifest.json" in str(caught.value) and repr(name) in str(caught.value)
    with pytest.raises(CorruptArtifactError, match="outside_root"):
        CorpusStore(corpus, verify=False)


def test_corpus_manifest_through_a_link_that_leads_out_is_refused(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    secret = _outside_copy(tmp_path, corpus / "part-00000.parquet")
    (corpus / "link").symlink_to(secret.parent, target_is_directory=True)
    _point_first_shard_at(corpus / "manifest.json", "link/secret.parquet", secret)
    with pytest.raises(CorruptArtifactError, match="'link/secret.parquet'"):
        read_corpus_manifest(corpus)


def test_a_plain_corpus_still_reads(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    assert read_corpus_manifest(corpus).rows == 2 and len(CorpusStore(corpus)) == 2


def test_embedding_manifest_naming_a_file_outside_is_refused(tmp_path):
    directory = write_embedding_dir(tmp_path / "emb", rows=20, dim=4, shards=2, clusters=2)
    first = emb.read_manifest(directory).shards[0].file
    secret = _outside_copy(tmp_path, directory / first)
    _point_first_shard_at(directory / "manifest.json", "../elsewhere/secret.parquet", secret)
    for verify in (True, False):
        with pytest.raises(CorruptArtifactError, match=r"manifest\.json: entry '\.\./elsewhere/secret\.parquet'"):
            emb.read_manifest(directory, verify=verify)
    with pytest.raises(CorruptArtifactError, match="outside_root"):
        emb.read_shard(directory, "../elsewhere/secret.parquet")


@pytest.mark.parametrize("field", ["files", "meta", "trained"])
def test_index_manifest_naming_a_file_outside_is_refused(tmp_path, field):
    write_embedding_dir(tmp_path / "emb", rows=60, dim=4, shards=2, clusters=2)
    build_index(tmp_path / "emb", tmp_path / "idx", factory="flat", space="text", use_ray=False, log=lambda _: None)
    index_dir = storage.place(tmp_path / "idx")
    from medcl.publish import resolve

    version = Path(resolve(index_dir))
    manifest = version / "index.json"
    body = json.loads(manifest.read_text())
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    hostile = "../" * (len(version.relative_to(tmp_path).parts)) + "secret.bin"
    if field == "files":
        body["files"][hostile] = sha256_file(secret)
    elif field == "meta":
        body["shards"][0]["meta"] = hostile
    else:
        body["trained"]["text"] = {"file": hostile, "factory": "Flat", "params": {}}
    manifest.write_text(json.dumps(body))
    for verify in (True, False):
        with pytest.raises(CorruptArtifactError) as caught:
            read_index_manifest(index_dir, verify=verify)
        assert "index.json" in str(caught.value) and repr(hostile) in str(caught.value)


def _sequence_checkpoint(directory: Path) -> Path:
    write_checkpoint(directory, rank=0, state=SequenceState(task_names=["a"], stage_names=["a"]), model=None,
                     strategy_state={"step": 1})
    return directory


def test_checkpoint_manifest_naming_a_file_outside_is_set_aside(tmp_path, capsys):
    checkpoints = tmp_path / "run" / "checkpoints"
    _sequence_checkpoint(checkpoints / "task-0")
    newer = _sequence_checkpoint(checkpoints / "task-1")
    secret = tmp_path / "credentials"
    secret.write_text("[default]\naws_secret_access_key = x\n")
    manifest = newer / "manifest-rank0.json"
    body = json.loads(manifest.read_text())
    body["../../../credentials"] = {"bytes": secret.stat().st_size, "sha256": sha256_file(secret)}
    manifest.write_text(json.dumps(body))

    problem = checkpoint_problem(newer)
    assert problem is not None and "manifest-rank0.json" in problem and "'../../../credentials'" in problem
    with pytest.raises(CorruptCheckpointError, match="outside_root"):
        verify_checkpoint(newer)
    assert latest_checkpoint(checkpoints, set_aside_torn=True) == checkpoints / "task-0"
    assert not newer.exists() and len(list(checkpoints.glob("task-1.torn-*"))) == 1  # set aside, nothing deleted
    assert secret.is_file()


def test_pretrain_checkpoint_manifest_naming_an_absolute_path_is_refused(tmp_path):
    step = tmp_path / "checkpoints" / "step-5"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"weights")
    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    listed = {name: {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
              for name, path in (("model.safetensors", step / "model.safetensors"), (str(secret), secret))}
    (step / "manifest.json").write_text(json.dumps(listed))
    reason = pretrain_ckpt.problem(step)
    assert reason is not None and "manifest.json" in reason and repr(str(secret)) in reason
    with pytest.raises(CorruptCheckpointError, match="outside_root"):
        pretrain_ckpt.verified_model(step)


@pytest.mark.parametrize("name", ["../x.parquet", "a/../../x", "/etc/passwd", "a//b", "./a", "", "a\\..\\b"])
def test_object_store_keys_outside_the_prefix_are_refused(name):
    with pytest.raises(OutsideRoot):
        inside_place(Location("s3://bucket/corpus/v-1"), name)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", ".", ""])
def test_local_names_outside_or_of_the_folder_itself_are_refused(tmp_path, name):
    with pytest.raises(OutsideRoot):
        inside_place(tmp_path, name)


def test_names_inside_are_kept_as_given(tmp_path):
    assert inside_place(Location("s3://bucket/c"), "text-ids/part-00000.parquet") == Location(
        "s3://bucket/c/text-ids/part-00000.parquet")
    assert inside_place(tmp_path, "sub/../part.parquet") == tmp_path / "sub/../part.parquet"


def test_corpus_in_an_object_store_naming_a_key_outside_is_refused(s3, tmp_path):
    base = Location(f"s3://{BUCKET}/manifest-paths-{os.urandom(4).hex()}")
    local = _corpus(tmp_path / "corpus")
    storage.upload_dir(local, base / "corpus")
    storage.write_bytes(base / "other" / "secret.parquet", (local / "part-00000.parquet").read_bytes())
    body = json.loads((local / "manifest.json").read_text())
    body["shards"][0]["file"] = "../other/secret.parquet"
    storage.write_text(base / "corpus" / "manifest.json", json.dumps(body))
    with pytest.raises(CorruptArtifactError, match=r"manifest\.json: entry '\.\./other/secret\.parquet'"):
        read_corpus_manifest(base / "corpus", verify=True)
