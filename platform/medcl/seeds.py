"""Seeded random generators, one stream per purpose: the same experiment seed gives the same
numbers, and two uses of randomness never share a stream by accident (no hand-picked offsets).

    rng(seed, "replay", stage, rank, step)   ->  np.random.default_rng([seed, crc32("replay"), stage, rank, step])

Strategies use :meth:`medcl.engine.context.TrainContext.rng`, which adds the stage and rank;
driver-side planning (PRIMED's siphon and uniform retrieval) calls :func:`rng` directly.
"""
from __future__ import annotations

import zlib

import numpy as np


def purpose_key(purpose: str) -> int:
    """A stable integer for ``purpose`` (CRC-32 of its UTF-8 bytes: the same in every process)."""
    return zlib.crc32(purpose.encode())


def rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A generator seeded by ``(seed, purpose, *keys)``; keys are non-negative integers."""
    return np.random.default_rng([int(seed), purpose_key(purpose), *(int(k) for k in keys)])
