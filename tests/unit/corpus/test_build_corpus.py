"""The corpus store (fetch by id, sha256 checks) and embedding in process (the same Embedder class
that Ray Data runs on its actor pool): normalised, one row per corpus row, deterministic, and image
preprocessing identical to training's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from medcl.corpus import shards
from medcl.corpus.build import build_corpus
from medcl.corpus.embed import Embedder, ModelInfo, embed_corpus, load_bundle, model_from_run
from medcl.corpus.schema import CorruptArtifactError
from medcl.corpus.spec import validate_spec
from medcl.corpus.store import CorpusStore
from medcl.hashing import sha256_file
from medcl.publish import resolve

SPEC = {"shard_rows": 25, "sources": [
    {"type": "synthmed", "per_class": 2, "domains": ["xray", "fundus", "histology"]},  # 30 rows with images
    {"type": "jsonl", "path": "captions.jsonl", "image_field": None, "name": "text"},   # 3 caption-only rows
]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    lines = [{"id": i, "caption": f"axial CT slice number {i}"} for i in range(3)]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    build_corpus(validate_spec({**SPEC, "data_root": str(root)}), root / "corpus", use_ray=False)
    return root / "corpus"


def test_store_fetches_rows_by_id_in_the_order_asked(corpus):
    store = CorpusStore(corpus)
    assert len(store) == 33 and len(store.manifest.shards) == 2  # shard_rows 25
    rows = store.fetch(["text:2", "synthmed:xray/train/0", "synthmed:histology/train/9", "text:2"])
    assert [r["id"] for r in rows] == ["text:2", "synthmed:xray/train/0", "synthmed:histology/train/9", "text:2"]
    assert rows[0]["image"] is None and rows[0]["caption"] == "axial CT slice number 2"
    assert rows[1]["image"].startswith(b"\x89PNG") and rows[1]["modality"] == "xray"
    assert "text:0" in store and "text:9" not in store
    with pytest.raises(KeyError, match="text:9"):
        store.fetch(["text:0", "text:9"])


def test_corpus_manifest_mismatch_is_detected(corpus, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    CorpusStore(copy)
    shard = sorted(resolve(copy).glob("part-*.parquet"))[1]
    shard.write_bytes(shard.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(CorruptArtifactError, match=rf"{shard.name}: sha256 does not match"):
        CorpusStore(copy)
    CorpusStore(copy, verify=False)  # explicitly unchecked access still opens
    shard.unlink()
    with pytest.raises(CorruptArtifactError, match="missing"):
        CorpusStore(copy)


@pytest.fixture(scope="module")
def embedded(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb")
    result = embed_corpus(corpus, out, ModelInfo("medcl-tiny"), batch_size=8, shard_rows=20, use_ray=False)
    return out, result


def test_embeddings_normalised_one_per_row(corpus, embedded):
    out, result = embedded
    manifest = shards.read_manifest(out)
    assert manifest.rows == result.rows == len(CorpusStore(corpus)) and result.with_image == 30
    table = pa_concat([shards.read_shard(out, s) for s in manifest.shards])
    assert table["id"].to_pylist() == CorpusStore(corpus).ids()  # corpus order, every row once
    text, image = shards.vectors(table, "text_embedding"), shards.vectors(table, "image_embedding")
    has_image = np.asarray(table["has_image"].to_pylist())
    assert text.shape == (33, manifest.dim) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(image[has_image], axis=1), 1, atol=1e-5)
    assert not has_image[-3:].any() and table["image_embedding"].null_count == 3
    from medcl.models import state_fingerprint
    assert manifest.model["fingerprint"] == state_fingerprint(load_bundle(ModelInfo("medcl-tiny")).model)
    assert manifest.model["name"] == "medcl-tiny" and manifest.model["seed"] == 0


def test_embeddings_are_deterministic(corpus, embedded, tmp_path):
    out, _ = embedded
    embed_corpus(corpus, tmp_path, ModelInfo("medcl-tiny"), batch_size=16, shard_rows=100, use_ray=False)
    first = pa_concat([shards.read_shard(out, s) for s in shards.read_manifest(out).shards])
    again = shards.read_shard(tmp_path, shards.read_manifest(tmp_path).shards[0])
    for column in ("text_embedding", "image_embedding"):
        np.testing.assert_allclose(shards.vectors(first, column), shards.vectors(again, column), atol=1e-6)
    other = embed_corpus(corpus, tmp_path / "seed1", ModelInfo("medcl-tiny", seed=1), shard_rows=100, use_ray=False)
    assert other.model["fingerprint"] != shards.read_manifest(out).model["fingerprint"]


def test_image_preprocessing_matches_training():
    """Embedding a stored PNG equals the training path: the task's uint8 image through to_model_input."""
    from medcl.corpus.sources.synthmed import png_bytes
    from medcl.data import BENCHMARKS
    from medcl.engine.preprocess import to_model_input

    task = BENCHMARKS.get("synthmed")().build({"domains": ["ultrasound"], "train_per_class": 1}, seed=0)[0]
    images = task.split("train").images[:4]
    embedder = Embedder(ModelInfo("medcl-tiny"))
    bundle = embedder.bundle
    with torch.inference_mode():
        expected = bundle.model.encode_image(
            to_model_input(images, bundle.image_size, bundle.mean, bundle.std), normalize=True).numpy()
    got = embedder._encode_images([png_bytes(img) for img in images])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_model_from_run_takes_the_newest_checkpoint(tmp_path):
    from medcl.models import save_weights

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "medcl-tiny", "image_size": None}}))
    bundle = load_bundle(ModelInfo("medcl-tiny", seed=3))
    for task in (0, 1):
        folder = tmp_path / "checkpoints" / f"task-{task}"
        save_weights(bundle.model, folder / "model.safetensors")
        (folder / "manifest-rank0.json").write_text(json.dumps({"model.safetensors": sha256_file(folder / "model.safetensors")}))
    info = model_from_run(tmp_path)
    assert info.name == "medcl-tiny" and info.pretrained.endswith("task-1/model.safetensors")
    from medcl.models import state_fingerprint
    assert state_fingerprint(load_bundle(info).model) == state_fingerprint(bundle.model)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        model_from_run(tmp_path / "checkpoints")


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


def test_embed_refuses_a_negative_gpu_count_or_an_unknown_precision(tmp_path):
    from medcl.corpus.embed import ModelInfo, embed_corpus

    with pytest.raises(ValueError, match="gpus must be >= 0"):
        embed_corpus(tmp_path, tmp_path / "out", ModelInfo("medcl-tiny"), gpus=-1)
    with pytest.raises(ValueError, match="precision one of bf16, fp16, fp32"):
        embed_corpus(tmp_path, tmp_path / "out", ModelInfo("medcl-tiny"), precision="int8")


def test_the_embedder_autocasts_only_on_gpu():
    from medcl.corpus.embed import HALF, Embedder, ModelInfo

    cpu = Embedder(ModelInfo("medcl-tiny"), precision="fp16")
    assert cpu.device == "cpu" and cpu.autocast is None  # CPU actors run fp32 whatever --precision says
    assert HALF["bf16"] is torch.bfloat16 and HALF["fp16"] is torch.float16 and HALF["fp32"] is None
