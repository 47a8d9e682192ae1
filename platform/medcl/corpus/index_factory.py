"""Which FAISS index to build for a shard, and how to search it.

``--factory`` takes a shorthand or any ``faiss.index_factory`` string (always with inner-product
metric, which is cosine similarity on the L2-normalised embeddings):

    auto (default)  sized from the space's row count n and dimension d (:func:`auto_factory`):
                    n < 200k: as ``ivf``; n < 4M: ``OPQ{m},IVF{L},PQ{m},Refine(SQ8)`` with m = d/4
                    bytes per vector and L = the power of two nearest 16 * sqrt(n); from 4M: m = d/8
                    (``OPQ64,IVF65536,PQ64,Refine(SQ8)`` at 18M x 512). The refine stage keeps an
                    8-bit scalar code of every vector (d more bytes per vector) and re-ranks the PQ
                    search's best k * ``REFINE_K_FACTOR`` with it: PQ alone reached recall@10 0.81
                    (m = d/4) and 0.64 (m = d/8) on the ROCO + MedPix embeddings, with the refine
                    stage 0.96 and 0.95 (0.98 on clustered synthetic 100k x 512;
                    experiments/benchmarks/index_recall.py, docs/corpus.md has the sizing table)
    ivf             ``IVF{L},Flat`` with L = round(4 * sqrt(n)) inverted lists, searched with
                    nprobe = max(16, ceil(L / 8)) lists (recall@10 >= 0.95, experiments/benchmarks/index_recall.py)
    hnsw            ``HNSW32`` built with efConstruction 80, searched with efSearch 128
    flat            ``Flat``: exact search
    anything else   as FAISS spells it: ``IVF1024,Flat``, ``HNSW16``, ``IVF256,PQ16``, ``OPQ16,IVF256,PQ16``...

Small shards fall back instead of failing (each fallback is reported): an ``IVF{L}`` whose training
sample holds fewer than 39 points per list gets L = sample // 39 lists, and becomes ``Flat`` below 4
lists; a product quantizer ``PQ{m}x{b}`` whose sample holds fewer than 39 * 2**b points is replaced
by ``Flat`` codes. ``nprobe`` / ``efSearch`` given by the user override the defaults (nprobe is
capped by the number of lists).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import faiss

from medcl.errors import MedclError

IVF_ALIAS, HNSW_ALIAS, FLAT_ALIAS, AUTO_ALIAS = "ivf", "hnsw", "flat", "auto"
DEFAULT_FACTORY = AUTO_ALIAS
COMPRESS_FROM, SMALL_CODES_FROM = 200_000, 4_000_000  # rows: PQ from here; d/8-byte codes from here
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
MIN_NPROBE = 16
NPROBE_FRACTION = 8  # nprobe = ceil(nlist / 8), at least MIN_NPROBE
POINTS_PER_LIST = 39  # FAISS k-means wants at least 39 training points per centroid
MIN_LISTS = 4
REFINE_K_FACTOR = 8  # a Refine(...) stage re-ranks the base index's best k * 8 with its finer codes
REFINE = "Refine(SQ8)"  # auto's refine stage: an 8-bit scalar code per dimension (d bytes per vector)

_IVF = re.compile(r"(?<![A-Za-z])IVF(\d+)")
_PQ = re.compile(r"(?<![A-Za-z])PQ(\d+)(?:x(\d+))?(fs)?")
EXAMPLES = "auto, ivf, hnsw, flat, or a FAISS factory string such as IVF1024,Flat, HNSW32, IVF256,PQ16"


class IndexBuildError(MedclError, ValueError):
    """A factory string or search parameter that cannot be used (names the value and what is allowed)."""


@dataclass
class FactoryChoice:
    """The FAISS factory string for one shard, its search parameters, and any fallback taken."""

    factory: str
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def resolve_factory(spec: str, *, rows: int, dim: int, sample: int, nprobe: int | None = None,
                    ef_search: int | None = None) -> FactoryChoice:
    """The factory for a shard of ``rows`` vectors (``sample`` of them used for training)."""
    alias = spec.strip().lower()
    if alias == AUTO_ALIAS:
        factory = auto_factory(rows, dim)
    elif alias == IVF_ALIAS:
        factory = f"IVF{max(1, round(4 * math.sqrt(rows)))},Flat"
    elif alias == HNSW_ALIAS:
        factory = f"HNSW{HNSW_M}"
    elif alias == FLAT_ALIAS:
        factory = "Flat"
    else:
        factory = spec.strip()
    choice = FactoryChoice(factory)
    _fit_lists(choice, sample)
    _fit_pq(choice, sample, dim)
    _check_buildable(choice.factory, dim, spec)
    choice.params = _search_params(choice.factory, dim, nprobe=nprobe, ef_search=ef_search)
    return choice


def auto_factory(rows: int, dim: int) -> str:
    """The default factory for ``rows`` vectors of dimension ``dim`` (module docstring's table)."""
    if rows < COMPRESS_FROM:
        return f"IVF{max(1, round(4 * math.sqrt(rows)))},Flat"
    lists = 2 ** round(math.log2(16 * math.sqrt(rows)))
    m = _divisor_at_most(dim, dim // (8 if rows >= SMALL_CODES_FROM else 4))
    return f"OPQ{m},IVF{lists},PQ{m},{REFINE}"


def _divisor_at_most(dim: int, wanted: int) -> int:
    return max(d for d in range(1, max(1, wanted) + 1) if dim % d == 0)


def default_train_sample(factory: str, rows: int, floor: int) -> int:
    """Training vectors for ``factory``: ``POINTS_PER_LIST`` per IVF list, at least ``floor``, at most ``rows``."""
    match = _IVF.search(factory)
    lists = int(match.group(1)) if match else 0
    return min(rows, max(floor, POINTS_PER_LIST * lists))


def _fit_lists(choice: FactoryChoice, sample: int) -> None:
    match = _IVF.search(choice.factory)
    if not match or int(match.group(1)) * POINTS_PER_LIST <= sample:
        return
    lists = sample // POINTS_PER_LIST
    before = choice.factory
    if lists < MIN_LISTS and "," in before and before.startswith(match.group(0) + ","):
        choice.factory = _codes_of(before) or "Flat"
        choice.notes.append(f"{before}: {sample} training vectors are too few for an IVF; using {choice.factory}")
        return
    lists = max(1, lists)
    choice.factory = before[:match.start(1)] + str(lists) + before[match.end(1):]
    choice.notes.append(f"{before}: {sample} training vectors give at most {lists} lists; using {choice.factory}")


def _codes_of(factory: str) -> str:
    """``IVF64,Flat`` -> ``Flat``; ``IVF64,PQ8`` -> ``PQ8`` (the codes once the IVF is dropped)."""
    return factory.split(",", 1)[1] if "," in factory else ""


def _fit_pq(choice: FactoryChoice, sample: int, dim: int) -> None:
    match = _PQ.search(choice.factory)
    if not match:
        return
    m, bits = int(match.group(1)), int(match.group(2) or 8)
    if m < 1 or dim % m:
        raise IndexBuildError(f"--factory {choice.factory!r}: PQ{m} needs a dimension divisible by {m}, "
                              f"the embeddings have dim {dim}")
    if sample >= POINTS_PER_LIST * 2 ** bits:
        return
    before = choice.factory
    choice.factory = before[:match.start()] + "Flat" + before[match.end():]
    choice.notes.append(f"{before}: {sample} training vectors are too few for PQ codebooks "
                        f"(need {POINTS_PER_LIST * 2 ** bits}); using {choice.factory}")


def _check_buildable(factory: str, dim: int, spec: str) -> None:
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "not a factory string"
        raise IndexBuildError(f"--factory {spec!r}: FAISS cannot build {factory!r} ({reason}); "
                              f"use {EXAMPLES}") from None


def _search_params(factory: str, dim: int, *, nprobe: int | None, ef_search: int | None) -> dict:
    for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if value is not None and value < 1:
            raise IndexBuildError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        default = max(MIN_NPROBE, math.ceil(ivf.nlist / NPROBE_FRACTION))
        params = {"nprobe": int(min(ivf.nlist, nprobe or default))}
        if isinstance(faiss.downcast_index(index), faiss.IndexRefine):
            params["k_factor_rf"] = REFINE_K_FACTOR
        return params
    if isinstance(index, faiss.IndexHNSW):
        return {"efSearch": int(ef_search or HNSW_EF_SEARCH)}
    return {}


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty inner-product index; HNSW graphs get ``efConstruction`` = 80."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


def apply_search_params(index: faiss.Index, params: dict) -> None:
    """Set ``nprobe`` / ``efSearch`` / ``k_factor_rf`` (as recorded in index.json) on a loaded index."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, float(value))
