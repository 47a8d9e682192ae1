"""Embedding shards: Parquet files of normalised embeddings plus a sha256-checked manifest.

Layout of an embedding directory::

    part-00000.parquet ...   id, caption, modality, source, has_image,
                             image_embedding (float32[dim], null when has_image is false),
                             text_embedding  (float32[dim])
    manifest.json            {"kind": "medcl-embeddings", "dim": D, "normalized": true,
                              "model": {"name", "pretrained", "fingerprint"}, "corpus": "...",
                              "shards": [{"file", "rows", "with_image", "sha256"}, ...]}

Every embedding is L2-normalised, so inner product = cosine similarity. ``read_manifest`` verifies
the sha256 of each shard file (``verify=True``) and raises ``CorruptArtifactError`` naming the file.
An embedding directory is any place of :mod:`medcl.storage` (a local path, a shared mount or an
object-store URI such as ``s3://bucket/embeddings``); every function here takes either.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medcl import storage
from medcl.corpus.parquet_io import read_table, write_table
from medcl.corpus.schema import check_listed_names, listed_file, read_manifest_body, verify_listed_files
from medcl.hashing import sha256_file

MANIFEST = "manifest.json"
KIND = "medcl-embeddings"


def embedding_schema(dim: int) -> pa.Schema:
    vector = pa.list_(pa.float32(), dim)
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("has_image", pa.bool_(), nullable=False),
        pa.field("image_embedding", vector, nullable=True),
        pa.field("text_embedding", vector, nullable=False),
    ])


@dataclass(frozen=True)
class ShardInfo:
    file: str
    rows: int
    with_image: int
    sha256: str


@dataclass(frozen=True)
class EmbeddingManifest:
    dim: int
    model: dict
    corpus: str
    shards: tuple[ShardInfo, ...]
    normalized: bool = True

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


def shard_file_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def embeddings_table(*, ids, captions, modalities, sources, image_embeddings: np.ndarray | None,
                     has_image: np.ndarray, text_embeddings: np.ndarray) -> pa.Table:
    """Build one shard's table; rows with ``has_image`` false get a null image embedding."""
    text = np.ascontiguousarray(text_embeddings, dtype=np.float32)
    dim = text.shape[1]
    has_image = np.asarray(has_image, dtype=bool)
    flat = pa.array(text.reshape(-1), pa.float32())
    text_col = pa.FixedSizeListArray.from_arrays(flat, dim)
    image = np.zeros_like(text) if image_embeddings is None else np.ascontiguousarray(image_embeddings, np.float32)
    image_col = pa.FixedSizeListArray.from_arrays(pa.array(image.reshape(-1), pa.float32()), dim,
                                                  mask=pa.array(~has_image))
    return pa.Table.from_arrays(
        [pa.array(list(ids), pa.string()), pa.array(list(captions), pa.string()),
         pa.array(list(modalities), pa.string()), pa.array(list(sources), pa.string()),
         pa.array(has_image), image_col, text_col], schema=embedding_schema(dim))


def write_shard(directory, index: int, table: pa.Table) -> ShardInfo:
    """Write ``table`` as shard ``index`` of ``directory``; return its manifest entry."""
    path = storage.place(directory) / shard_file_name(index)
    write_table(table, path)
    with_image = int(pc.sum(table["has_image"]).as_py() or 0)
    return ShardInfo(path.name, table.num_rows, with_image, sha256_file(path))


def write_manifest(directory, *, dim: int, model: dict, corpus: str, shards: list[ShardInfo]):
    """Write ``manifest.json`` into ``directory``; return its place."""
    path = storage.place(directory) / MANIFEST
    body = {"kind": KIND, "dim": dim, "normalized": True, "model": model, "corpus": corpus,
            "shards": [asdict(s) for s in shards]}
    storage.write_text(path, json.dumps(body, indent=2))
    return path


def read_manifest(directory, *, verify: bool = True) -> EmbeddingManifest:
    """The manifest of an embedding directory's current version (:func:`medcl.publish.resolve`);
    read shards from ``publish.resolve(directory)`` too, resolved once, so both are one version."""
    from medcl import publish

    directory = publish.resolve(directory)
    path, body = read_manifest_body(directory, MANIFEST, KIND, "medcl corpus embed")
    shards = tuple(ShardInfo(**s) for s in body["shards"])
    check_listed_names(directory, [s.file for s in shards], path)  # every shard inside the folder, verified or not
    if verify:
        verify_listed_files(directory, {s.file: s.sha256 for s in shards}, path.name)
    return EmbeddingManifest(dim=int(body["dim"]), model=body["model"], corpus=body["corpus"], shards=shards,
                             normalized=bool(body.get("normalized", True)))


def read_shard(directory, shard: ShardInfo | str, columns: list[str] | None = None) -> pa.Table:
    from medcl import publish

    name = shard.file if isinstance(shard, ShardInfo) else shard
    return read_table(listed_file(publish.resolve(directory), name, MANIFEST), columns=columns)  # a version: itself


def vectors(table: pa.Table, column: str) -> np.ndarray:
    """(rows, dim) float32 from a fixed-size-list column; null rows come back as zeros."""
    col = table[column].combine_chunks()
    dim = col.type.list_size
    filled = col.fill_null(pa.scalar([0.0] * dim, col.type)) if col.null_count else col
    return np.asarray(filled.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
