"""How many shard actors the retrieval service starts, which index shards each serves, and the
memory each declares to Ray.

An actor holds, per indexed space, the space's trained index once (``{space}-trained.faiss``:
coarse quantizer, OPQ rotation, codebooks) and its index shards' codes and ids appended to it
(the shards' ``.codes.npy`` + ``.labels.npy``: code size + 8 bytes per vector, as in memory), or
whole per-shard ``.faiss`` files (HNSW, old index directories) as they are on disk. With ``F`` the
trained files' bytes (summed over the spaces) and ``b_n`` the bytes of index shard n's files, for
``S`` shard groups::

    S        = min(#shards, max(1, ceil(sum_n b_n / (max_actor_bytes - F))))   (unless ``shards`` is given)
    group g  = the shards with n % S == g
    memory_g = ceil(MEMORY_FACTOR * (F + sum_{n in g} b_n)) + ACTOR_OVERHEAD_BYTES

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


SHARD_FILES = ("codes", "labels", "index")


def shard_bytes(index_dir: str | Path, shards: list[dict]) -> dict[int, int]:
    """Bytes of the codes, labels and whole-index files of every shard number, summed over the
    spaces (manifest entries without files, e.g. a space with no rows in that shard, count 0)."""
    sizes: dict[int, int] = {}
    for entry in shards:
        size = sum((Path(index_dir) / entry[key]).stat().st_size for key in SHARD_FILES if entry.get(key))
        sizes[entry["shard"]] = sizes.get(entry["shard"], 0) + size
    return sizes


def trained_bytes(index_dir: str | Path, manifest) -> int:
    """Bytes of the spaces' trained index files, which every actor loads once (0 for old index dirs)."""
    return sum((Path(index_dir) / t["file"]).stat().st_size for t in manifest.trained.values())


def plan_groups(sizes: dict[int, int], *, shards: int | None = None, max_actor_bytes: int = DEFAULT_MAX_ACTOR_BYTES,
                fixed_bytes: int = 0) -> tuple[list[list[int]], list[int]]:
    """``(groups, memory)``: the shard numbers each actor group serves and the bytes each declares
    (``fixed_bytes``: what every actor loads whatever its shards, F in the module docstring).

    Raises:
        ValueError: ``sizes`` is empty, ``shards`` < 1, ``max_actor_bytes`` < 1 or ``fixed_bytes`` < 0.
    """
    if not sizes:
        raise ValueError("the index has no shards to serve")
    if shards is not None and shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if max_actor_bytes < 1:
        raise ValueError(f"max_actor_bytes must be >= 1, got {max_actor_bytes}")
    if fixed_bytes < 0:
        raise ValueError(f"fixed_bytes must be >= 0, got {fixed_bytes}")
    numbers = sorted(sizes)
    room = max(1, max_actor_bytes - fixed_bytes)
    wanted = shards if shards is not None else math.ceil(sum(sizes.values()) / room)
    count = max(1, min(wanted, len(numbers)))
    groups = [numbers[g::count] for g in range(count)]
    memory = [math.ceil(MEMORY_FACTOR * (fixed_bytes + sum(sizes[n] for n in group))) + ACTOR_OVERHEAD_BYTES
              for group in groups]
    return groups, memory
