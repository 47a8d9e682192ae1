"""FAISS standalone codes: an index shard stored as its codes, added back to one trained index.

``medcl index build`` trains one index per space and stores it once, empty
(``{space}-trained.faiss``); every embedding shard is stored as ``encode(trained, vectors)``, the
FAISS standalone codes (``sa_encode``): per vector ``sa_code_size`` bytes, which for an IVF are the
coarse list number (``ceil(log2(L) / 8)`` bytes) followed by the list's code (PQ: m bytes; Flat:
4d bytes); for ``Refine(...)`` the base code then the refine code; for ``OPQ...`` the code of the
rotated vector. Nothing of the quantizer is repeated per shard.

A process that serves several shards deserialises the trained index once and appends every shard's
codes to it (:func:`add_codes`) without re-encoding: the result is bit-for-bit the index
``trained.add(all vectors)`` would give, so the coarse search runs once per query, not once per
shard (tests/unit/corpus/test_index_codes.py). Internal FAISS ids are the positions 0..ntotal-1 in
the order the shards were added; the caller maps them to global labels.

Indexes without standalone codes (HNSW graphs: the graph is built from the vectors, nothing trained
is shared) are stored per shard as whole FAISS files instead (:func:`has_codes` is false).
"""
from __future__ import annotations

import faiss
import numpy as np


def has_codes(index: faiss.Index) -> bool:
    """Whether ``index`` (trained) can encode vectors to standalone codes and take them back."""
    try:
        index.sa_code_size()
    except RuntimeError:
        return False
    return _appender(index) is not None


def encode(index: faiss.Index, vectors: np.ndarray) -> np.ndarray:
    """``(n, sa_code_size)`` uint8 codes of ``vectors`` under the trained ``index``."""
    return index.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))


def add_codes(index: faiss.Index, codes: np.ndarray) -> None:
    """Append ``codes`` (from :func:`encode` on the same trained index) with ids ntotal, ntotal+1, ...

    Raises ValueError when the codes' width differs from the index's ``sa_code_size``.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or codes.shape[1] != index.sa_code_size():
        raise ValueError(f"codes of shape {codes.shape} do not fit this index: it takes "
                         f"(n, {index.sa_code_size()}) uint8 standalone codes")
    if len(codes):
        _appender(index)(codes)


def _appender(index: faiss.Index):
    """A function appending codes to ``index`` with sequential ids (None: not supported).

    IndexPreTransform (OPQ): the codes are of the transformed vectors, appended to the inner index,
    and the wrapper's ``ntotal`` follows. IndexRefine: each code is base code + refine code, split and
    appended to both (the refine index is addressed by the base index's ids, so ids must be
    positions). IVF: ``add_sa_codes`` with ids = positions. Flat/PQ/SQ codes: ``add_sa_codes``.
    """
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        inner = faiss.downcast_index(index.index)
        append = _appender(inner)
        return None if append is None else _then_sync(append, index, inner)
    if isinstance(index, faiss.IndexRefine):
        base, refine = faiss.downcast_index(index.base_index), faiss.downcast_index(index.refine_index)
        base_append, refine_append = _appender(base), _appender(refine)
        if base_append is None or refine_append is None:
            return None
        width = base.sa_code_size()

        def append_both(codes):
            base_append(np.ascontiguousarray(codes[:, :width]))
            refine_append(np.ascontiguousarray(codes[:, width:]))
            index.ntotal = base.ntotal
        return append_both
    if isinstance(index, faiss.IndexIVF):
        return lambda codes: index.add_sa_codes(codes, np.arange(index.ntotal, index.ntotal + len(codes),
                                                                 dtype=np.int64))
    if isinstance(index, faiss.IndexFlatCodes):
        return lambda codes: index.add_sa_codes(codes, None)
    return None


def _then_sync(append, outer: faiss.Index, inner: faiss.Index):
    def append_and_sync(codes):
        append(codes)
        outer.ntotal = inner.ntotal
    return append_and_sync
