"""FAISS indexes over embedding shards: one global index per space, stored as index shards.

Layout of an index directory (written by index_build.py, checked by sha256 when loaded)::

    index.json            {"kind": "medcl-index", "format": 2, "dim", "metric": "inner_product",
                           "model": {...}, "embeddings": EMB_DIR, "corpus": CORPUS_DIR, "factory": "auto",
                           "spaces": ["text", "image"],
                           "trained": {space: {"file", "factory", "params"}},
                           "shards": [{"space", "shard", "source", "rows", "offset", "factory",
                                       "params", "codes", "labels", "index", "meta"}, ...],
                           "files": {file name: sha256}}
    text-trained.faiss    the text space's trained, empty index: coarse quantizer, OPQ rotation and
                          PQ/refine codebooks, stored once
    text-00000.codes.npy  index shard 0 of the text space as FAISS standalone codes, (rows, code size)
                          uint8 (index_codes.py); text-00000.labels.npy its global labels (int64)
    text-ids/part-00000.parquet   the id mapping: label, id, caption, modality, shard, row
    image-*               the same for the image embeddings

Factories without standalone codes (HNSW graphs) store each shard as a whole FAISS file
``{space}-{n:05d}.faiss`` (entry ``index``; ``codes`` null). Index directories written before the
codes format (no ``format`` key: a whole ``.faiss`` file per shard, each with its own copy of the
quantizer) still load and answer the same, with a warning to rebuild (index_load.py).

A FAISS label ``i`` of index shard n is the global label ``offset + i``: the row of the space's
id mapping (the Parquet dataset ``{space}-ids/``, parts in label order). Searches return scores and
global labels; ids, captions and modalities are looked up (:class:`RowMap`) for the merged top-k only.

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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medcl import storage
from medcl.corpus.index_factory import DEFAULT_FACTORY, IndexBuildError
from medcl.corpus.merge import MISSING_ID, Hits
from medcl.corpus.schema import check_listed_names, read_manifest_body, verify_listed_files
from medcl.corpus.verify import verify_listing

INDEX_MANIFEST = "index.json"
INDEX_KIND = "medcl-index"
INDEX_FORMAT = 2  # 2: trained index once per space + codes per shard; 1 (no key): a whole .faiss per shard
SPACES = ("text", "image")
DEFAULT_TRAIN_SAMPLE = None  # enough for the factory's lists, at least 100,000 (index_build.py)


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
    trained: dict = field(default_factory=dict)  # space -> {"file", "factory", "params"}
    format: int = INDEX_FORMAT

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


def build_index(emb_dir, out_dir, *, factory: str = DEFAULT_FACTORY, space: str = "both",
                train_sample: int | None = DEFAULT_TRAIN_SAMPLE, nprobe: int | None = None,
                ef_search: int | None = None, seed: int = 0, use_ray: bool | None = None,
                log=print) -> IndexManifest:
    """Build one global index per space under ``out_dir`` (index_build.py) and write ``index.json``.

    Trained once per space on ``min(rows, train_sample)`` vectors drawn with ``seed`` (default:
    39 per IVF list of the chosen factory, at least 100,000); shards are
    filled in Ray tasks when ``use_ray`` (default: when Ray is initialised in this process).
    ``log`` receives one line per space and per fallback taken. ``emb_dir`` and ``out_dir`` are
    places of :mod:`medcl.storage`: local paths or URIs (``s3://...``; each task writes its files in a
    local scratch folder and uploads them, ``index.json`` last).
    """
    from medcl.corpus import shards as emb
    from medcl.corpus.index_build import build_space, check_train_sample

    check_train_sample(train_sample)
    spaces = parse_spaces(space)
    if use_ray is None:
        import ray

        use_ray = ray.is_initialized()
    from medcl import publish

    given = storage.place(emb_dir)
    emb_dir = publish.resolve(given)  # one version of the embeddings for the whole build
    source = emb.read_manifest(emb_dir, verify=False)  # each shard is checked by the task reading it
    verify = lambda stage: verify_listing(stage, read_index_manifest(stage).files, INDEX_MANIFEST,  # noqa: E731
                                                  use_ray=use_ray)
    with publish.publishing(out_dir, verify=verify, command="medcl index build", legacy=LEGACY) as stage:
        entries, files, trained = [], {}, {}
        for name in spaces:
            part, hashes, template = build_space(emb_dir, source, name, stage, factory=factory,
                                                 train_sample=train_sample, nprobe=nprobe, ef_search=ef_search,
                                                 seed=seed, use_ray=use_ray, log=log)
            entries += part
            files.update(hashes)
            if template:
                trained[name] = template
        manifest = IndexManifest(dim=source.dim, model=dict(source.model), embeddings=str(given),
                                 corpus=source.corpus, factory=factory, spaces=spaces, shards=tuple(entries),
                                 files=files, trained=trained)
        write_index_manifest(stage, manifest)
    return manifest


LEGACY = (INDEX_MANIFEST, "*-trained.faiss", "*.codes.npy", "*.labels.npy", "*-[0-9][0-9][0-9][0-9][0-9].faiss",
          "text-ids", "image-ids")  # an unversioned index directory's files


def write_index_manifest(out_dir: Path, manifest: IndexManifest) -> Path:
    body = {"kind": INDEX_KIND, "format": manifest.format, "dim": manifest.dim, "metric": "inner_product", "model": manifest.model,
            "embeddings": manifest.embeddings, "corpus": manifest.corpus, "factory": manifest.factory,
            "spaces": list(manifest.spaces), "trained": manifest.trained, "shards": list(manifest.shards),
            "files": manifest.files}
    path = storage.place(out_dir) / INDEX_MANIFEST
    storage.write_text(path, json.dumps(body, indent=2))
    return path


def read_index_manifest(index_dir: Path, *, verify: bool = False) -> IndexManifest:
    """Parse ``index.json`` of the index's current version (:func:`medcl.publish.resolve`: a caller
    reading files resolves ``index_dir`` once itself, as :func:`local_index_dir` does); with
    ``verify`` check every listed file's sha256 now."""
    from medcl.publish import resolve

    index_dir = resolve(index_dir)
    path, body = read_manifest_body(index_dir, INDEX_MANIFEST, INDEX_KIND, "medcl index build")
    manifest = IndexManifest(dim=int(body["dim"]), model=body["model"], embeddings=body["embeddings"],
                             corpus=body.get("corpus", ""), factory=body["factory"], spaces=tuple(body["spaces"]),
                             shards=tuple(body["shards"]), files=dict(body["files"]),
                             trained=dict(body.get("trained") or {}), format=int(body.get("format", 1)))
    if manifest.format > INDEX_FORMAT:
        raise IndexBuildError(f"{index_dir}: index format {manifest.format} is newer than this medcl reads "
                              f"({INDEX_FORMAT}); upgrade medcl or rebuild the index")
    check_listed_names(index_dir, listed_names(manifest), path)  # every file inside the folder, verified or not
    if verify:
        verify_files(index_dir, manifest, list(manifest.files))
    return manifest


def listed_names(manifest: IndexManifest) -> list[str]:
    """Every file name ``index.json`` gives: ``files``' keys, each space's trained index and each
    shard entry's ``codes``, ``labels``, ``index`` and ``meta`` (null for none)."""
    names = list(manifest.files)
    names += [t["file"] for t in manifest.trained.values() if isinstance(t, dict) and t.get("file") is not None]
    names += [s[key] for s in manifest.shards for key in ("codes", "labels", "index", "meta")
              if isinstance(s, dict) and s.get(key) is not None]
    return names


def local_index_dir(index_dir) -> Path:
    """The index directory on this node's disk: a local path as it is; a URI (``s3://...``)
    downloaded once per node into the node's cache, keyed by the URI and ``index.json``'s sha256;
    either way first resolved to the version its ``CURRENT`` names (:func:`medcl.publish.resolve`)
    (:func:`medcl.storage_dirs.cached_dir`: concurrent loaders of one node share one copy). Every
    reader of an index (LocalRetriever, the service's actors) resolves its ``index_dir`` here."""
    from medcl.publish import resolve
    from medcl.storage_dirs import cached_dir

    return cached_dir(resolve(index_dir), INDEX_MANIFEST)


def verify_files(index_dir: Path, manifest: IndexManifest, names: list[str]) -> None:
    verify_listed_files(index_dir, manifest.files, INDEX_MANIFEST, names)


class RowMap:
    """Global labels of one space -> ids, captions, modalities (the ``{space}-ids/`` Parquet parts,
    sha256-checked, read on first use as Arrow arrays: no Python object arrays)."""

    def __init__(self, index_dir: Path, manifest: IndexManifest, space: str, *, verify: bool = True):
        self.index_dir, self.manifest, self.space = Path(index_dir), manifest, space
        self.metas = [e["meta"] for e in manifest.entries(space) if e["meta"]]
        if verify:  # now, so that a changed file is named when the retriever opens
            verify_files(self.index_dir, manifest, self.metas)
        self._table: pa.Table | None = None

    def table(self) -> pa.Table:
        if self._table is None:
            columns = ["label", "id", "caption", "modality"]
            parts = [pq.read_table(self.index_dir / m, columns=columns) for m in self.metas]
            empty = pa.schema([("label", pa.int64()), ("id", pa.string()), ("caption", pa.string()),
                               ("modality", pa.string())]).empty_table()
            self._table = pa.concat_tables(parts).combine_chunks() if parts else empty
        return self._table

    def hits(self, scores: np.ndarray, labels: np.ndarray) -> Hits:
        """The merged top-k as :class:`Hits` (missing slots: id ``""``)."""
        table, flat = self.table(), np.asarray(labels, np.int64).reshape(-1)
        missing = flat < 0
        taken = table.take(pa.array(np.where(missing, 0, flat))) if len(table) else None

        def column(name):
            values = np.full(flat.shape, MISSING_ID, dtype=object)
            if taken is not None:
                values[~missing] = np.asarray(taken[name].to_pylist(), dtype=object)[~missing]
            return values.reshape(labels.shape)

        return Hits(np.asarray(scores, np.float32), column("id"), column("caption"), column("modality"))


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries must be (Q, {dim}) float32 embeddings like the index's, got shape {queries.shape}")
    return np.ascontiguousarray(queries)
