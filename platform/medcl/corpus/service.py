"""The retrieval service: index shards served by Ray actors, reachable by name from the whole cluster.

    service = RetrievalService.start("runs/index", replicas=2)      # owner: the driver
    result = service.search(embeddings, k=10)                          # (Q, dim) -> SearchResult
    result = service.search_text(["chest x-ray with effusion"], k=10)
    other = RetrievalService.connect()                                 # a Train worker, another task
    service.stop()

Layout (all actors in the Ray namespace ``medcl``): S shard groups x R replicas of
:class:`ShardServer` named ``{name}/shard-{s}/replica-{r}``; shard group s serves the index shards
whose number n has ``n % S == s``, in every space. S is chosen by memory (``shards`` overrides it):
enough groups that none holds more than ``max_actor_bytes`` of index, each actor declaring the
``memory=`` its shards need (:mod:`medcl.corpus.service_plan`); replicas are scheduled with Ray's
``SPREAD`` strategy, so the R copies of a group land on different nodes where there are several. A
:class:`ServiceHead` actor named ``{name}`` holds the layout (so :meth:`RetrievalService.connect`
finds every shard actor) and embeds raw text with the index's model (loaded on first use). The
actors are not detached: they live as long as the job that started them.

A query batch is put in the object store once, sent to one replica of every shard group (replicas
taken round-robin per batch), and the S partial top-k lists are merged by score, ties by id
(:func:`medcl.corpus.merge.merge_topk`). ``submit`` returns a :class:`PendingSearch` so several
batches can be in flight at once (this is what keeps the shard actors busy; ``search`` is
``submit(...).result()``).

Versions: the service resolves ``index_dir`` once, at start, to the version its ``CURRENT`` names
(:mod:`medcl.publish`) and every actor, restarted ones included, loads that version and checks its
``index.json`` sha256 against the one recorded at start, so a rebuild published meanwhile is never
mixed into the answers (a restarted actor whose version is gone, or changed in place, fails loudly;
``medcl index build`` keeps the previous version for this).

Failures: shard actors have ``max_restarts`` and ``max_task_retries=-1``; their constructor reloads
the index from storage (sha256-checked), so a restarted actor answers exactly as before. A call that
still fails with ``RayActorError`` (actor died or restarting) is re-sent to the next replica, then to
the same one after a back-off, until ``retry_timeout`` seconds have passed: no query is lost while a
restart completes.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass

import numpy as np
import ray
from ray.exceptions import RayActorError

from medcl import telemetry
from medcl import publish, storage
from medcl.corpus.index import RowMap, check_queries, local_index_dir, read_index_manifest
from medcl.corpus.index_load import load_space
from medcl.corpus.merge import Hits, merge_labels
from medcl.corpus.retrieval import CorpusFetcher, SearchResult, check_k, corpus_dir_of
from medcl.corpus.service_plan import DEFAULT_MAX_ACTOR_BYTES, plan_groups, shard_bytes, trained_bytes

NAMESPACE = "medcl"
DEFAULT_NAME = "medcl-retrieval"
RETRY_TIMEOUT_S = 120.0


class ServiceError(RuntimeError):
    """The service cannot be started, found, or reached (names the service and what to do)."""


class ShardServer:
    """Serves the index shards numbered ``numbers`` in every indexed space, loaded in the constructor
    as one FAISS index per space (the trained index once + the shards' codes; index_load.py), so a
    query batch runs one coarse search per space and actor. ``index_dir`` may be a URI: it is
    downloaded once per node into the node's cache (:func:`~medcl.corpus.index.local_index_dir`)."""

    def __init__(self, index_dir: str, numbers: list[int], omp_threads: int = 1, manifest_sha256: str | None = None):
        import faiss

        faiss.omp_set_num_threads(max(1, omp_threads))
        self.index_dir = local_index_dir(index_dir)  # this node's copy of a URI, else the path given
        check_pinned(self.index_dir, manifest_sha256)
        manifest = read_index_manifest(self.index_dir)
        self.numbers = list(numbers)
        self.spaces = {space: load_space(self.index_dir, space, numbers=set(numbers)) for space in manifest.spaces}
        self.started = time.time()

    def search(self, queries: np.ndarray, k: int, space: str) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, global labels)`` (Q, k) of this group's shards; no ids or captions."""
        loaded = self.spaces.get(space)
        if loaded is None:
            raise ValueError(f"space {space!r} is not indexed (spaces: {', '.join(self.spaces)})")
        return loaded.search(queries, k)

    def info(self) -> dict:
        rows = {space: loaded.rows for space, loaded in self.spaces.items()}
        return {"pid": os.getpid(), "started": self.started, "numbers": self.numbers, "rows": rows,
                "index_dir": str(self.index_dir)}


class ServiceHead:
    """The service's named entry point: its layout, and text embedding with the index's model."""

    def __init__(self, layout: dict):
        self.layout = layout
        self._encoder = None

    def get_layout(self) -> dict:
        return self.layout

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            import torch

            from medcl.corpus.encoder import TextEncoder

            torch.set_num_threads(1)
            self._encoder = TextEncoder(self.layout["model"])
        return self._encoder(texts)


_ShardActor = ray.remote(ShardServer)
_HeadActor = ray.remote(ServiceHead)


@dataclass
class PendingSearch:
    """A query batch in flight: one object ref per shard group."""

    service: "RetrievalService"
    queries: object  # ObjectRef of the (Q, dim) array
    count: int
    k: int
    space: str
    replica: int
    refs: list
    submitted: float = 0.0  # time.perf_counter() at submit

    def result(self) -> SearchResult:
        hits = self.service._gather(self)
        telemetry.record_retrieval(self.count, time.perf_counter() - self.submitted, service=self.service.name)
        return SearchResult.from_hits(hits)


class RetrievalService:
    """Client of a running service (see the module docstring); implements ``Retriever``."""

    def __init__(self, layout: dict, head, shards: list[list], *, owner: bool = False,
                 retry_timeout: float = RETRY_TIMEOUT_S):
        self.layout, self.name = layout, layout["name"]
        self._head, self._shards, self._owner = head, shards, owner
        self.retry_timeout = retry_timeout
        self._turn = itertools.count()
        self._fetcher = CorpusFetcher(storage.place(layout["corpus_dir"]) if layout.get("corpus_dir") else None)
        self._rows: dict[str, RowMap] = {}

    @classmethod
    def start(cls, index_dir, *, replicas: int = 1, name: str = DEFAULT_NAME, corpus_dir=None,
              num_cpus: float = 0.25, shards: int | None = None, max_restarts: int = 4,
              omp_threads: int = 1, ready_timeout: float = 300.0,
              max_actor_bytes: int = DEFAULT_MAX_ACTOR_BYTES) -> "RetrievalService":
        """Start S x ``replicas`` shard actors over ``index_dir`` (S and each actor's ``memory=`` from
        :func:`~medcl.corpus.service_plan.plan_groups`) and wait until every one has loaded.
        ``index_dir`` (and ``corpus_dir``) may be URIs: each node downloads the index once into its
        cache (:func:`~medcl.corpus.index.local_index_dir`), this one to plan the groups."""
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        _require_ray()
        source = publish.resolve(index_dir)  # pinned: every actor, restarts included, loads this version
        index_dir = local_index_dir(source)
        pinned = manifest_digest(index_dir)
        manifest = read_index_manifest(index_dir, verify=True)
        groups, memory = plan_groups(shard_bytes(index_dir, list(manifest.shards)), shards=shards,
                                     max_actor_bytes=max_actor_bytes, fixed_bytes=trained_bytes(index_dir, manifest))
        if _find_actor(name) is not None:
            raise ServiceError(f"a retrieval service named {name!r} is already running in namespace {NAMESPACE!r}; "
                               f"use RetrievalService.connect({name!r}) or stop it first")
        corpus = corpus_dir_of(index_dir, corpus_dir)
        layout = {"name": name, "index_dir": str(source), "index_sha256": pinned, "corpus_dir": str(corpus) if corpus else None,
                  "dim": manifest.dim, "spaces": list(manifest.spaces), "model": manifest.model,
                  "groups": groups, "memory": memory, "replicas": replicas,
                  "actors": [[f"{name}/shard-{g}/replica-{r}" for r in range(replicas)] for g in range(len(groups))]}
        head = _HeadActor.options(name=name, namespace=NAMESPACE, num_cpus=0, max_restarts=-1,
                                  max_task_retries=-1).remote(layout)
        handles = [[_ShardActor.options(name=actor, namespace=NAMESPACE, num_cpus=num_cpus, memory=need,
                                        scheduling_strategy="SPREAD", max_restarts=max_restarts,
                                        max_task_retries=-1).remote(str(source), group, omp_threads, pinned)
                    for actor in row] for row, group, need in zip(layout["actors"], groups, memory)]
        service = cls(layout, head, handles, owner=True)
        try:
            ray.get([h.info.remote() for row in handles for h in row] + [head.get_layout.remote()],
                    timeout=ready_timeout)
        except Exception:
            service.stop()
            raise
        return service

    @classmethod
    def connect(cls, name: str = DEFAULT_NAME, *, timeout: float = 30.0) -> "RetrievalService":
        """A client of the service ``name`` started by any process of this Ray cluster."""
        _require_ray()
        head = _find_actor(name)
        if head is None:
            raise ServiceError(f"no retrieval service named {name!r} in Ray namespace {NAMESPACE!r}; "
                               f"start one with RetrievalService.start(index_dir, name={name!r})")
        layout = ray.get(head.get_layout.remote(), timeout=timeout)
        shards = [[ray.get_actor(actor, namespace=NAMESPACE) for actor in row] for row in layout["actors"]]
        return cls(layout, head, shards)

    @property
    def dim(self) -> int:
        return int(self.layout["dim"])

    def submit(self, queries: np.ndarray, k: int, *, space: str = "text") -> PendingSearch:
        """Send one batch to every shard group; returns at once (call ``.result()``)."""
        k, queries = check_k(k), check_queries(queries, self.dim)
        if space not in self.layout["spaces"]:
            raise ValueError(f"space {space!r} is not indexed (spaces: {', '.join(self.layout['spaces'])})")
        replica = next(self._turn) % self.layout["replicas"]
        ref = ray.put(queries)
        refs = [row[replica].search.remote(ref, k, space) for row in self._shards]
        return PendingSearch(self, ref, len(queries), k, space, replica, refs, submitted=time.perf_counter())

    def search(self, queries: np.ndarray, k: int, *, space: str = "text") -> SearchResult:
        return self.submit(queries, k, space=space).result()

    def search_text(self, texts: list[str], k: int, *, space: str = "text") -> SearchResult:
        return self.search(self.encode(texts), k, space=space)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Text embeddings from the service's encoder (the index's model)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        return self._retry("text encoder", lambda: ray.get(self._head.encode.remote(list(texts))))

    def fetch(self, ids: list[str]) -> list[dict]:
        return self._fetcher.fetch(ids)

    def info(self) -> list[list[dict]]:
        """Per shard group and replica: pid, start time, shard numbers, rows per space, and the local
        index directory it loaded (a node's cached copy when the index is a URI)."""
        return [[ray.get(h.info.remote()) for h in row] for row in self._shards]

    def shard_actor(self, group: int, replica: int = 0):
        return self._shards[group][replica]

    def stop(self) -> None:
        """Kill the service's actors (any client may stop it; the name is free again at once)."""
        for actor in [h for row in self._shards for h in row] + [self._head]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001  (already gone)
                pass
        self._shards = []

    def __enter__(self) -> "RetrievalService":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _gather(self, pending: PendingSearch) -> Hits:
        """Merge the groups' (scores, labels), then look up ids and captions of the top-k only."""
        try:
            parts = ray.get(pending.refs)
        except RayActorError:
            parts = [self._shard_result(group, pending) for group in range(len(pending.refs))]
        scores, labels = parts[0] if len(parts) == 1 else merge_labels(parts, pending.k)
        return self._row_map(pending.space).hits(scores, labels)

    def _row_map(self, space: str) -> RowMap:
        if space not in self._rows:
            index_dir = local_index_dir(self.layout["index_dir"])
            check_pinned(index_dir, self.layout.get("index_sha256"))
            self._rows[space] = RowMap(index_dir, read_index_manifest(index_dir), space)
        return self._rows[space]

    def _shard_result(self, group: int, pending: PendingSearch) -> Hits:
        replicas = self._shards[group]
        attempt = itertools.count(1)

        def call(ref=pending.refs[group]):
            try:
                return ray.get(ref)
            except RayActorError:
                actor = replicas[(pending.replica + next(attempt)) % len(replicas)]
                return ray.get(actor.search.remote(pending.queries, pending.k, pending.space))
        return self._retry(f"shard group {group}", call)

    def _retry(self, what: str, call):
        deadline, delay = time.monotonic() + self.retry_timeout, 0.05
        while True:
            try:
                return call()
            except RayActorError as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self.name}: {what} did not answer within {self.retry_timeout:.0f} s "
                                       f"({type(exc).__name__}); are its actors out of restarts?") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


def manifest_digest(index_dir) -> str:
    """sha256 of the index directory's ``index.json`` (which lists every other file's sha256)."""
    import hashlib

    from medcl.corpus.index import INDEX_MANIFEST

    return hashlib.sha256(storage.read_bytes(storage.place(index_dir) / INDEX_MANIFEST)).hexdigest()


def check_pinned(index_dir, expected: str | None) -> None:
    """ServiceError when ``index_dir`` no longer holds the index the service started with (an
    unversioned index rebuilt in place): an actor refuses to load it rather than answer from a mix."""
    if expected and manifest_digest(index_dir) != expected:
        raise ServiceError(f"{index_dir}: index.json changed since the service started (the index was rebuilt "
                           "in place); restart the service to serve the new index")


def _require_ray() -> None:
    if not ray.is_initialized():
        raise ServiceError("Ray is not running in this process: call ray.init() (or ray.init(address=...)) first")


def _find_actor(name: str):
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
