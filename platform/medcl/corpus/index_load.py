"""One searchable index per space in this process, from the index shards it is asked to serve.

:func:`load_space` reads ``index.json`` (index.py) and returns a :class:`SpaceIndex` holding the
index shards numbered ``numbers`` (all by default) of one space:

* shards stored as codes (every factory with FAISS standalone codes: IVF-Flat/PQ/SQ, OPQ, Refine,
  Flat): the space's trained index ``{space}-trained.faiss`` is read **once** and every shard's codes
  are appended to it (:mod:`medcl.corpus.index_codes`), so a query runs one coarse search over the
  whole quantizer and scans ``nprobe`` lists holding every served vector. Internal FAISS id ``j``
  is position j in the order the shards were added; ``labels[j]`` (the shards' ``.labels.npy``
  concatenated) is its global label, the row of the space's id mapping.
* shards stored as whole FAISS files (HNSW graphs; and every shard of an index directory written
  before the codes format, where each file carries its own copy of the quantizer): each is loaded
  and searched on its own, its label i mapped to ``offset + i``.

The parts' top-k lists are merged by score (:func:`medcl.corpus.merge.merge_labels`), which equals
searching one index holding every vector (the quantizer and codebooks are shared). Every file's
sha256 is checked against ``index.json`` before it is read (``CorruptArtifactError`` names it).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import faiss
import numpy as np

from medcl.corpus.index_codes import add_codes
from medcl.corpus.index_factory import apply_search_params
from medcl.corpus.merge import MISSING_SCORE, merge_labels

OLD_FORMAT_NOTE = ("{dir} was written by an older `medcl index build`: every index shard holds its own copy of "
                   "the coarse quantizer, so it takes more memory and each query repeats the coarse search per "
                   "shard; rebuild it with `medcl index build` to store the quantizer once")


class SpaceIndex:
    """The served index shards of one space; ``search`` answers scores and global labels."""

    def __init__(self, space: str, dim: int):
        self.space, self.dim = space, dim
        self.combined: faiss.Index | None = None  # trained index + every codes shard
        self.labels = np.zeros(0, np.int64)        # internal id of ``combined`` -> global label
        self.whole: list[tuple[faiss.Index, int]] = []  # (index, label offset) of whole-file shards
        self.rows = 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, labels)`` (Q, k) for (Q, dim) L2-normalised float32 queries, score descending
        then label ascending; label -1 and score ``-inf`` in missing slots."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        parts = []
        if self.combined is not None and self.combined.ntotal:
            scores, ids = self.combined.search(queries, k)
            parts.append(_mask(scores, ids, np.where(ids < 0, -1, self.labels[np.maximum(ids, 0)])))
        for index, offset in self.whole:
            scores, ids = index.search(queries, k)
            parts.append(_mask(scores, ids, ids + offset))
        if not parts or len(queries) == 0:
            return np.full((len(queries), k), MISSING_SCORE, np.float32), np.full((len(queries), k), -1, np.int64)
        return merge_labels(parts, k)  # also orders equal scores by label, as the service's merge does


def _mask(scores: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    missing = ids < 0
    return (np.where(missing, np.float32(MISSING_SCORE), scores).astype(np.float32),
            np.where(missing, -1, labels).astype(np.int64))


def load_space(index_dir, space: str, *, numbers=None, verify: bool = True) -> SpaceIndex:
    """Load the index shards of ``space`` (those numbered in ``numbers``, or all) into one SpaceIndex."""
    from medcl.corpus.index import read_index_manifest, verify_files
    from medcl.publish import resolve

    index_dir = Path(resolve(index_dir))  # a version folder resolves to itself
    manifest = read_index_manifest(index_dir)
    if space not in manifest.spaces:
        raise ValueError(f"space {space!r} is not indexed in {index_dir} (spaces: {', '.join(manifest.spaces)})")
    entries = [e for e in manifest.entries(space) if e["rows"] and (numbers is None or e["shard"] in numbers)]
    check = (lambda names: verify_files(index_dir, manifest, names)) if verify else (lambda names: None)
    loaded = SpaceIndex(space, manifest.dim)
    coded = [e for e in entries if e.get("codes")]
    if coded:
        trained = manifest.trained[space]
        check([trained["file"]])
        loaded.combined = faiss.read_index(str(index_dir / trained["file"]))
        apply_search_params(loaded.combined, trained.get("params") or {})
        loaded.labels = np.concatenate([_add_shard(loaded.combined, index_dir, e, check) for e in coded])
    if manifest.format < 2 and entries:
        warnings.warn(OLD_FORMAT_NOTE.format(dir=index_dir), stacklevel=2)
    for entry in (e for e in entries if not e.get("codes")):
        check([entry["index"]])
        index = faiss.read_index(str(index_dir / entry["index"]))
        apply_search_params(index, entry.get("params") or {})
        loaded.whole.append((index, int(entry.get("offset", 0))))
    loaded.rows = sum(e["rows"] for e in entries)
    return loaded


def _add_shard(index: faiss.Index, index_dir: Path, entry: dict, check) -> np.ndarray:
    """Append one shard's codes to ``index``; returns its global labels (checked against the entry)."""
    check([entry["codes"], entry["labels"]])
    codes = np.load(index_dir / entry["codes"], allow_pickle=False)
    labels = np.load(index_dir / entry["labels"], allow_pickle=False)
    if len(codes) != entry["rows"] or len(labels) != entry["rows"]:
        raise ValueError(f"{entry['codes']}: {len(codes)} codes and {len(labels)} labels, index.json says "
                         f"{entry['rows']} rows; rebuild the index")
    add_codes(index, codes)
    return labels.astype(np.int64, copy=False)
