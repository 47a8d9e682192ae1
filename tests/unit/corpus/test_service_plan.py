"""medcl.corpus.service_plan: shard groups chosen by memory, and the memory each actor declares."""
from __future__ import annotations

import pytest

from medcl.corpus.service_plan import ACTOR_OVERHEAD_BYTES, MEMORY_FACTOR, plan_groups, shard_bytes, trained_bytes

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


def test_the_trained_index_every_actor_loads_counts_once_per_actor_and_leaves_less_room():
    sizes = {n: GIB for n in range(6)}  # 6 GiB of codes; each actor also loads 2 GiB of trained indexes
    groups, memory = plan_groups(sizes, max_actor_bytes=4 * GIB, fixed_bytes=2 * GIB)
    assert len(groups) == 3  # 2 GiB of room per actor for codes
    assert memory == [int(MEMORY_FACTOR * 4 * GIB) + ACTOR_OVERHEAD_BYTES] * 3


@pytest.mark.parametrize("sizes,kwargs,message", [({}, {}, "no shards"), ({0: 1}, {"shards": 0}, "shards must be >= 1"),
                                                  ({0: 1}, {"max_actor_bytes": 0}, "max_actor_bytes must be >= 1"),
                                                  ({0: 1}, {"fixed_bytes": -1}, "fixed_bytes must be >= 0")])
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


def test_codes_and_labels_count_per_shard_and_trained_files_once(tmp_path):
    from types import SimpleNamespace

    for name, size in {"text-00000.codes.npy": 30, "text-00000.labels.npy": 8, "text-trained.faiss": 100,
                       "image-trained.faiss": 50}.items():
        (tmp_path / name).write_bytes(b"x" * size)
    entries = [{"space": "text", "shard": 0, "codes": "text-00000.codes.npy", "labels": "text-00000.labels.npy",
                "index": None}]
    assert shard_bytes(tmp_path, entries) == {0: 38}
    trained = {"text": {"file": "text-trained.faiss"}, "image": {"file": "image-trained.faiss"}}
    assert trained_bytes(tmp_path, SimpleNamespace(trained=trained)) == 150
