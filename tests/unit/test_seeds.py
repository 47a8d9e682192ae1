"""Randomness by purpose: ``ctx.rng(purpose)`` (and :func:`medcl.seeds.rng` on the driver) gives the
same numbers for the same seed, stage and rank, and a different stream for another purpose."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from medcl import seeds
from medcl.engine.context import Stage, TrainContext


def _ctx(seed=0, stage_index=0, rank=0, stages=None) -> TrainContext:
    stages = stages or [Stage("a", (0,)), Stage("b", (1,))]
    return TrainContext(model=None, tokenizer=None, tasks=[], stages=stages, device=None, seed=seed,
                        stage_index=stage_index, rank=rank, world_size=2)


def draw(generator: np.random.Generator) -> list[int]:
    return generator.integers(0, 2**31, 4).tolist()


def test_the_same_seed_gives_the_same_numbers_and_each_purpose_its_own():
    assert draw(_ctx().rng("replay", 3)) == draw(_ctx().rng("replay", 3))
    assert draw(_ctx().rng("replay", 3)) != draw(_ctx().rng("buffer", 3))
    assert draw(_ctx().rng("replay", 3)) != draw(_ctx().rng("replay", 4))
    assert draw(_ctx().rng("replay")) != draw(_ctx(seed=1).rng("replay"))
    assert draw(_ctx().rng("replay")) != draw(_ctx(stage_index=1).rng("replay"))


def test_ranks_differ_unless_the_stream_is_shared():
    assert draw(_ctx(rank=0).rng("replay")) != draw(_ctx(rank=1).rng("replay"))
    assert draw(_ctx(rank=0).rng("reference", 2, shared=True)) == draw(_ctx(rank=1).rng("reference", 2, shared=True))
    assert draw(_ctx(stage_index=1).rng("reference", 2, shared=True)) == draw(seeds.rng(0, "reference", 1, 2))


def test_purpose_keys_are_stable_across_processes():
    assert seeds.purpose_key("siphon") == zlib.crc32(b"siphon")  # not Python's per-process salted hash()


def test_task_index_is_only_defined_for_a_one_task_stage():
    ctx = _ctx(stages=[Stage("a", (0,)), Stage("joint", (0, 1))])
    assert ctx.task_index == 0
    ctx.stage_index = 1
    with pytest.raises(ValueError, match="mixes tasks"):
        ctx.task_index
