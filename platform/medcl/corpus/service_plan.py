"""How many shard actors the retrieval service starts, which index shards each serves, and the
memory each declares to Ray.

An actor holds its index shards in RAM, in every indexed space, about the size of their ``.faiss``
files (IVF-PQ codes and lists, HNSW graphs and vectors, flat vectors: FAISS reads the file into
memory as it is). For ``S`` shard groups over index shards numbered ``n`` with bytes ``b_n``::

    S        = min(#shards, max(1, ceil(sum_n b_n / max_actor_bytes)))   (unless ``shards`` is given)
    group g  = the shards with n % S == g
    memory_g = ceil(MEMORY_FACTOR * sum_{n in g} b_n) + ACTOR_OVERHEAD_BYTES

so no actor is asked to hold more than about ``max_actor_bytes`` of index (8 GiB by default, a
quarter of a 32 GiB node) and Ray places actors only where their memory is free. ``memory_g`` is a
scheduling reservation (Ray's logical ``memory`` resource), not a limit enforced on the process.
"""
from __future__ import annotations

import math
from pathlib import Path

DEFAULT_MAX_ACTOR_BYTES = 8 << 30
MEMORY_FACTOR = 1.25            # FAISS' own buffers and the query/answer arrays beside the loaded index
ACTOR_OVERHEAD_BYTES = 384 << 20  # a Python worker with numpy and faiss imported


def shard_bytes(index_dir: str | Path, shards: list[dict]) -> dict[int, int]:
    """Bytes of the index files of every shard number, summed over the spaces (manifest entries
    without an index file, e.g. a space with no rows in that shard, count 0)."""
    sizes: dict[int, int] = {}
    for entry in shards:
        size = (Path(index_dir) / entry["index"]).stat().st_size if entry.get("index") else 0
        sizes[entry["shard"]] = sizes.get(entry["shard"], 0) + size
    return sizes


def plan_groups(sizes: dict[int, int], *, shards: int | None = None,
                max_actor_bytes: int = DEFAULT_MAX_ACTOR_BYTES) -> tuple[list[list[int]], list[int]]:
    """``(groups, memory)``: the shard numbers each actor group serves and the bytes each declares.

    Raises:
        ValueError: ``sizes`` is empty, ``shards`` < 1 or ``max_actor_bytes`` < 1.
    """
    if not sizes:
        raise ValueError("the index has no shards to serve")
    if shards is not None and shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if max_actor_bytes < 1:
        raise ValueError(f"max_actor_bytes must be >= 1, got {max_actor_bytes}")
    numbers = sorted(sizes)
    wanted = shards if shards is not None else math.ceil(sum(sizes.values()) / max_actor_bytes)
    count = max(1, min(wanted, len(numbers)))
    groups = [numbers[g::count] for g in range(count)]
    memory = [math.ceil(MEMORY_FACTOR * sum(sizes[n] for n in group)) + ACTOR_OVERHEAD_BYTES for group in groups]
    return groups, memory
