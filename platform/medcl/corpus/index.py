"""FAISS index shards over embedding shards, with a sha256-checked ``index.json``.

One index per embedding shard and space, so shards can be served by separate actors::

    index.json            {"kind": "medcl-index", "dim", "metric": "inner_product", "model": {...},
                           "embeddings": EMB_DIR, "corpus": CORPUS_DIR, "factory": "ivf",
                           "spaces": ["text", "image"],
                           "shards": [{"space", "shard", "source", "rows", "factory", "params",
                                       "index", "meta"}, ...],
                           "files": {file name: sha256}}
    text-00000.faiss      index of part-00000.parquet's text embeddings
    text-00000.parquet    id, caption, modality, row: FAISS id i is row i of this file, and ``row`` is
                          its row in the embedding shard
    image-00000.*         the same for the image embeddings

Spaces: ``text`` indexes the text embedding of every row; ``image`` the image embedding of rows that
have an image. Text-only corpus entries (ROCO ships captions without images) are therefore
searchable in the text space only; an embedding shard without any image gets an image entry with
``rows: 0`` and no files. ``model`` is copied from the embedding manifest (name, pretrained,
fingerprint), so queries are embedded with the same weights. Every file's sha256 is checked when a
shard is loaded (``CorruptArtifactError`` names the file).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medcl.corpus.index_factory import (DEFAULT_FACTORY, IndexBuildError, apply_search_params, new_index,
                                        resolve_factory)
from medcl.corpus.merge import MISSING_ID, MISSING_SCORE, Hits
from medcl.corpus.schema import read_manifest_body, verify_listed_files
from medcl.hashing import sha256_file

INDEX_MANIFEST = "index.json"
INDEX_KIND = "medcl-index"
SPACES = ("text", "image")
_COLUMN = {"text": "text_embedding", "image": "image_embedding"}
DEFAULT_TRAIN_SAMPLE = 100_000


@dataclass(frozen=True)
class IndexManifest:
    """The parsed ``index.json`` (see the module docstring)."""

    dim: int
    model: dict
    embeddings: str
    corpus: str
    factory: str
    spaces: tuple[str, ...]
    shards: tuple[dict, ...]
    files: dict = field(default_factory=dict)

    def entries(self, space: str) -> list[dict]:
        return [s for s in self.shards if s["space"] == space]

    @property
    def shard_numbers(self) -> list[int]:
        return sorted({s["shard"] for s in self.shards})


def parse_spaces(space: str) -> tuple[str, ...]:
    if space == "both":
        return SPACES
    if space not in SPACES:
        raise IndexBuildError(f"--space {space!r} is not one of: text, image, both")
    return (space,)


def build_index(emb_dir: Path, out_dir: Path, *, factory: str = DEFAULT_FACTORY, space: str = "both",
                train_sample: int = DEFAULT_TRAIN_SAMPLE, nprobe: int | None = None,
                ef_search: int | None = None, seed: int = 0, log=print) -> IndexManifest:
    """Build one index per embedding shard and space under ``out_dir`` and write ``index.json``.

    Indexes needing training are trained on ``min(rows, train_sample)`` vectors drawn with ``seed``.
    ``log`` receives one line per shard and per fallback taken.
    """
    from medcl.corpus import shards as emb

    if train_sample < 1:
        raise IndexBuildError(f"--train-sample must be >= 1, got {train_sample}")
    spaces = parse_spaces(space)
    source = emb.read_manifest(Path(emb_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, files = [], {}
    for number, shard in enumerate(source.shards):
        table = emb.read_shard(emb_dir, shard)
        for name in spaces:
            entry = _build_one(table, name, number, shard.file, out_dir, factory, source.dim,
                               train_sample=train_sample, nprobe=nprobe, ef_search=ef_search, seed=seed, log=log)
            for key in ("index", "meta"):
                if entry[key]:
                    files[entry[key]] = sha256_file(out_dir / entry[key])
            entries.append(entry)
    manifest = IndexManifest(dim=source.dim, model=dict(source.model), embeddings=str(Path(emb_dir).resolve()),
                             corpus=source.corpus, factory=factory, spaces=spaces, shards=tuple(entries),
                             files=files)
    write_index_manifest(out_dir, manifest)
    return manifest


def _build_one(table: pa.Table, space: str, number: int, source: str, out_dir: Path, factory: str, dim: int,
               *, train_sample: int, nprobe, ef_search, seed: int, log) -> dict:
    rows = (np.arange(table.num_rows) if space == "text"
            else np.flatnonzero(table["has_image"].to_numpy(zero_copy_only=False)))
    entry = {"space": space, "shard": number, "source": source, "rows": int(len(rows)),
             "factory": None, "params": {}, "index": None, "meta": None}
    if len(rows) == 0:
        log(f"{source} [{space}]: no rows with an embedding in this space; nothing to index")
        return entry
    from medcl.corpus.shards import vectors as column_vectors

    vectors = np.ascontiguousarray(column_vectors(table, _COLUMN[space])[rows])
    sample = min(len(rows), train_sample)
    choice = resolve_factory(factory, rows=len(rows), dim=dim, sample=sample, nprobe=nprobe, ef_search=ef_search)
    for note in choice.notes:
        log(f"{source} [{space}]: {note}")
    index = new_index(choice.factory, dim)
    if not index.is_trained:
        picked = np.random.default_rng(seed).choice(len(rows), size=sample, replace=False)
        index.train(vectors[np.sort(picked)])
    index.add(vectors)
    stem = f"{space}-{number:05d}"
    faiss.write_index(index, str(out_dir / f"{stem}.faiss"))
    meta = table.select(["id", "caption", "modality"]).take(pa.array(rows))
    pq.write_table(meta.append_column("row", pa.array(rows, pa.int64())), out_dir / f"{stem}.parquet")
    entry.update(factory=choice.factory, params=choice.params, index=f"{stem}.faiss", meta=f"{stem}.parquet")
    log(f"{source} [{space}]: {len(rows)} vectors, {choice.factory} {choice.params or ''}".rstrip())
    return entry


def write_index_manifest(out_dir: Path, manifest: IndexManifest) -> Path:
    body = {"kind": INDEX_KIND, "dim": manifest.dim, "metric": "inner_product", "model": manifest.model,
            "embeddings": manifest.embeddings, "corpus": manifest.corpus, "factory": manifest.factory,
            "spaces": list(manifest.spaces), "shards": list(manifest.shards), "files": manifest.files}
    path = Path(out_dir) / INDEX_MANIFEST
    path.write_text(json.dumps(body, indent=2))
    return path


def read_index_manifest(index_dir: Path, *, verify: bool = False) -> IndexManifest:
    """Parse ``index.json``; with ``verify`` check every listed file's sha256 now."""
    _, body = read_manifest_body(index_dir, INDEX_MANIFEST, INDEX_KIND, "medcl index build")
    manifest = IndexManifest(dim=int(body["dim"]), model=body["model"], embeddings=body["embeddings"],
                             corpus=body.get("corpus", ""), factory=body["factory"], spaces=tuple(body["spaces"]),
                             shards=tuple(body["shards"]), files=dict(body["files"]))
    if verify:
        verify_files(index_dir, manifest, list(manifest.files))
    return manifest


def verify_files(index_dir: Path, manifest: IndexManifest, names: list[str]) -> None:
    verify_listed_files(index_dir, manifest.files, INDEX_MANIFEST, names)


class IndexShard:
    """One loaded index shard: FAISS index plus its id/caption/modality columns."""

    def __init__(self, index_dir: Path, manifest: IndexManifest, entry: dict, *, verify: bool = True):
        self.space, self.shard, self.rows, self.dim = entry["space"], entry["shard"], entry["rows"], manifest.dim
        self.index = None
        if not entry["index"]:
            return
        if verify:
            verify_files(index_dir, manifest, [entry["index"], entry["meta"]])
        self.index = faiss.read_index(str(Path(index_dir) / entry["index"]))
        apply_search_params(self.index, entry.get("params") or {})
        meta = pq.read_table(Path(index_dir) / entry["meta"], columns=["id", "caption", "modality"])
        self.ids, self.captions, self.modalities = (meta[c].to_numpy(zero_copy_only=False).astype(object)
                                                    for c in ("id", "caption", "modality"))

    def search(self, queries: np.ndarray, k: int) -> Hits:
        """Top-k of this shard for (Q, dim) L2-normalised float32 queries."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is None or len(queries) == 0:
            return Hits.empty(len(queries), k)
        scores, labels = self.index.search(queries, k)
        missing = labels < 0
        scores[missing] = MISSING_SCORE
        take = np.where(missing, 0, labels)

        def column(values):
            return np.where(missing, MISSING_ID, values[take])

        return Hits(scores.astype(np.float32), column(self.ids), column(self.captions), column(self.modalities))


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries must be (Q, {dim}) float32 embeddings like the index's, got shape {queries.shape}")
    return np.ascontiguousarray(queries)


def load_shards(index_dir: Path, space: str, *, numbers=None, verify: bool = True) -> list[IndexShard]:
    """Load the index shards of ``space`` (those with shard number in ``numbers``, or all)."""
    manifest = read_index_manifest(index_dir)
    if space not in manifest.spaces:
        raise ValueError(f"space {space!r} is not indexed in {index_dir} (spaces: {', '.join(manifest.spaces)})")
    return [IndexShard(index_dir, manifest, e, verify=verify) for e in manifest.entries(space)
            if numbers is None or e["shard"] in numbers]
