"""The two halves of ``corpus embed`` (embed_prep.py: decode/tokenise on CPU; Embedder: encode) and
the worker-side shard writing of embed_ray.py, without Ray: a prepared batch carries the decoded
uint8 pixels of exactly the rows with an image (also when Ray hands a sliced block), the model
stage equals decoding inside the model, and written parts are published in order with their sha256."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from medcl.corpus import shards
from medcl.corpus.embed import Embedder, ModelInfo
from medcl.corpus.embed_prep import decode_images, pixels_of, prepare_batch, tokens_of
from medcl.corpus.embed_ray import _publish, _write_part
from medcl.hashing import sha256_file


@pytest.fixture(scope="module")
def embedder():
    return Embedder(ModelInfo("medcl-tiny"))


def _corpus_batch(rows: int = 6) -> pa.Table:
    from medcl.corpus.sources.synthmed import png_bytes

    rng = np.random.default_rng(0)
    images = [png_bytes(rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)) if i % 3 else None for i in range(rows)]
    return pa.table({"id": [f"r{i}" for i in range(rows)], "image": pa.array(images, pa.binary()),
                     "caption": [f"caption {i}" for i in range(rows)], "modality": ["ct"] * rows,
                     "source": ["s"] * rows})


def test_prepared_batch_holds_decoded_pixels_of_the_rows_with_an_image(embedder):
    batch = _corpus_batch()
    size = embedder.bundle.image_size
    prepared = prepare_batch(batch, image_size=size, tokenizer=embedder.bundle.tokenizer)
    assert prepared["has_image"].to_pylist() == [False, True, True, False, True, True]
    blobs = [b for b in batch["image"].to_pylist() if b is not None]
    np.testing.assert_array_equal(pixels_of(prepared, size), decode_images(blobs, size))
    np.testing.assert_array_equal(tokens_of(prepared), embedder.bundle.tokenizer(batch["caption"].to_pylist()).numpy())
    part = prepared.slice(2, 3)  # Ray Data slices blocks into batches: offsets must be honoured
    np.testing.assert_array_equal(pixels_of(part, size), decode_images([blobs[1], blobs[2]], size))
    assert pixels_of(prepared.slice(3, 1), size).shape == (0, size, size, 3)


def test_embedder_on_a_prepared_batch_equals_decoding_in_the_model(embedder):
    batch = _corpus_batch()
    prepared = prepare_batch(batch, image_size=embedder.bundle.image_size, tokenizer=embedder.bundle.tokenizer)
    table = embedder(prepared)
    assert table.schema == shards.embedding_schema(table.schema.field("text_embedding").type.list_size)
    assert table["id"].to_pylist() == batch["id"].to_pylist() and table["image_embedding"].null_count == 2
    blobs = [b for b in batch["image"].to_pylist() if b is not None]
    image = shards.vectors(table, "image_embedding")[table["has_image"].to_numpy(zero_copy_only=False)]
    np.testing.assert_allclose(image, embedder._encode_images(blobs), atol=1e-5)


def test_workers_write_and_hash_parts_and_the_driver_renames_them_in_order(embedder, tmp_path):
    prepared = prepare_batch(_corpus_batch(), image_size=embedder.bundle.image_size,
                             tokenizer=embedder.bundle.tokenizer)
    table = embedder(prepared)
    staging = tmp_path / ".tmp"
    staging.mkdir()
    stats = [json.loads(_write_part(block, str(staging))["stats"][0].as_py())
             for block in (table.slice(0, 4), table.slice(4))]
    assert [s["rows"] for s in stats] == [4, 2] and [s["with_image"] for s in stats] == [2, 2]
    written = _publish(tmp_path, staging, stats)
    assert [s.file for s in written] == ["part-00000.parquet", "part-00001.parquet"] and not list(staging.iterdir())
    assert all(sha256_file(tmp_path / s.file) == s.sha256 for s in written)
    assert shards.read_shard(tmp_path, written[1])["id"].to_pylist() == ["r4", "r5"]


@pytest.mark.ray
@pytest.mark.parametrize("damage", ["unreadable", "rewritten"])
def test_a_corrupt_corpus_shard_is_named_by_the_parallel_check(ray_session, tmp_path, damage):
    """The sha256 checks run while embedding: an unreadable shard (the pipeline fails) and a readable
    but altered one (the pipeline succeeds) are both named, and nothing is published."""
    from medcl.corpus.embed import embed_corpus
    from medcl.corpus.parquet_io import write_table
    from medcl.corpus.schema import CorruptArtifactError
    from medcl.corpus.store import write_corpus_manifest, write_corpus_shard

    batch = _corpus_batch().append_column("license", pa.array(["CC0-1.0"] * 6))
    written = [write_corpus_shard(tmp_path / "corpus", n, batch.slice(3 * n, 3)) for n in (0, 1)]
    write_corpus_manifest(tmp_path / "corpus", written, {"s": 6})
    if damage == "unreadable":
        (tmp_path / "corpus" / written[1].file).write_bytes(b"not parquet")
    else:
        write_table(batch.slice(0, 3), tmp_path / "corpus" / written[1].file)  # valid Parquet, other rows
    with pytest.raises(CorruptArtifactError, match="part-00001.parquet"):
        embed_corpus(tmp_path / "corpus", tmp_path / "emb", ModelInfo("medcl-tiny"), actors=1)
    assert not list((tmp_path / "emb").rglob("*"))  # nothing published, no staging left


@pytest.mark.ray
def test_decoding_runs_in_the_cpu_actors_and_in_tasks_feeding_gpu_actors(ray_session, tmp_path, capsys):
    """Ray Data fuses prepare_batch into CPU model actors (equal resources) but not into GPU ones,
    whose actors would otherwise decode on the GPU's single process."""
    from medcl.corpus.embed_ray import _pipeline
    from medcl.corpus.store import write_corpus_shard

    batch = _corpus_batch().append_column("license", pa.array(["CC0-1.0"] * 6))
    path = str(tmp_path / "corpus" / write_corpus_shard(tmp_path / "corpus", 0, batch).file)
    plans = {}
    for gpus in (0, 1):
        _pipeline([path], tmp_path / "staging", embedder=Embedder, embedder_kwargs={"info": ModelInfo("medcl-tiny")},
                  prepare_kwargs={}, batch_size=4, actors=1, gpus=gpus, shard_rows=6).explain()
        plans[gpus] = capsys.readouterr().out.split("Physical Plan")[-1]
    fused = "MapBatches(prepare_batch)->MapBatches(Embedder)"
    assert fused in plans[0] and "ActorPoolMapOperator" in plans[0]
    assert fused not in plans[1] and "TaskPoolMapOperator[MapBatches(prepare_batch)]" in plans[1]
