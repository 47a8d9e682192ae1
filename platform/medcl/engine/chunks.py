"""Work over a split's rows shared by ranks in whole batches, so results never depend on the world size.

The ``n`` rows are cut into chunks of ``batch_size`` consecutive rows; rank ``r`` of ``world`` takes
chunks ``r, r + world, ...`` and encodes each chunk as one batch, which is exactly the batch one
process encodes for that chunk. The all-gathered result is therefore bitwise the single process's:
a float result of a batched matmul can differ in its last bits with the batch's composition, and an
arg-max between near-equal scores (evaluation, iCaRL's herding) would then flip with the number of
workers.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def rank_chunks(n: int, batch_size: int, rank: int, world: int) -> list[np.ndarray]:
    """The row indices of each chunk rank ``rank`` handles, in order."""
    return [np.arange(start, min(n, start + batch_size)) for start in range(0, n, batch_size)][rank::world]


def gather_chunks(local: torch.Tensor, n: int, batch_size: int, world: int) -> torch.Tensor:
    """The (n, ...) tensor of every rank's ``local`` rows (its chunks' results concatenated in order),
    placed back at their rows; ``local`` itself when ``world`` is 1. A collective: every rank calls it."""
    if world == 1:
        return local
    chunks = -(-n // batch_size)
    width = -(-chunks // world) * batch_size  # rows of the rank with the most chunks
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: len(local)] = local
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    full = local.new_zeros((n, *local.shape[1:]))
    for i in range(chunks):
        start, stop = i * batch_size, min(n, (i + 1) * batch_size)
        offset = (i // world) * batch_size
        full[start:stop] = shards[i % world][offset: offset + stop - start]
    return full
