"""medcl.corpus.service_plan: shard groups chosen by memory, and the memory each actor declares."""
from __future__ import annotations

import pytest

from medcl.corpus.service_plan import ACTOR_OVERHEAD_BYTES, MEMORY_FACTOR, plan_groups, shard_bytes

GIB = 1 << 30


def test_a_small_index_is_served_by_one_actor_declaring_its_size():
    groups, memory = plan_groups({0: 100, 1: 300}, max_actor_bytes=GIB)
    assert groups == [[0, 1]]
    assert memory == [int(MEMORY_FACTOR * 400) + ACTOR_OVERHEAD_BYTES]


def test_enough_groups_that_none_holds_more_than_the_cap():
    sizes = {n: 3 * GIB for n in range(10)}  # 30 GiB of index, 8 GiB per actor: 4 groups
    groups, memory = plan_groups(sizes, max_actor_bytes=8 * GIB)
    assert groups == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]  # shard n in group n % 4
    assert memory[0] == int(MEMORY_FACTOR * 9 * GIB) + ACTOR_OVERHEAD_BYTES
    assert memory[3] == int(MEMORY_FACTOR * 6 * GIB) + ACTOR_OVERHEAD_BYTES


def test_never_more_groups_than_shards_and_an_explicit_count_wins():
    assert plan_groups({0: 50 * GIB, 1: 50 * GIB}, max_actor_bytes=GIB)[0] == [[0], [1]]
    assert plan_groups({0: 1, 1: 1, 2: 1}, shards=3)[0] == [[0], [1], [2]]
    assert plan_groups({0: 1, 1: 1, 2: 1}, shards=9)[0] == [[0], [1], [2]]


@pytest.mark.parametrize("sizes,kwargs,message", [({}, {}, "no shards"), ({0: 1}, {"shards": 0}, "shards must be >= 1"),
                                                  ({0: 1}, {"max_actor_bytes": 0}, "max_actor_bytes must be >= 1")])
def test_bad_plans_are_refused(sizes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_groups(sizes, **kwargs)


def test_shard_bytes_sums_the_spaces_and_counts_a_missing_space_as_zero(tmp_path):
    (tmp_path / "text-00000.faiss").write_bytes(b"x" * 10)
    (tmp_path / "image-00000.faiss").write_bytes(b"x" * 7)
    (tmp_path / "text-00001.faiss").write_bytes(b"x" * 5)
    entries = [{"space": "text", "shard": 0, "index": "text-00000.faiss"},
               {"space": "image", "shard": 0, "index": "image-00000.faiss"},
               {"space": "text", "shard": 1, "index": "text-00001.faiss"},
               {"space": "image", "shard": 1, "index": None}]
    assert shard_bytes(tmp_path, entries) == {0: 17, 1: 5}
