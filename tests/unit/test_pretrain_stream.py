"""The corpus pretraining stream: the driver's plan (footers and held-out rows only), the decode
stage, the seeded per-pass batches, and equal rows per rank through Ray Train's split."""
from __future__ import annotations

import io
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medcl.corpus.schema import CORPUS_SCHEMA
from medcl.pretrain.config import CorpusData, PretrainConfigError
from medcl.pretrain.corpus_plan import plan_corpus
from medcl.pretrain.stream import StreamBatches, decode_rows, pass_seed, training_dataset


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), (value, 255 - value, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(i: int, image) -> dict:
    return {"id": f"t:{i}", "image": image, "caption": f"scan {i}", "source": "t", "modality": "ct", "license": "CC0"}


@pytest.fixture
def corpus(tmp_path):
    """Two shards of 30 rows (row groups of 8): t:3 caption-only, t:5 undecodable, t:50 caption-only."""
    root = tmp_path / "corpus"
    root.mkdir()
    for shard in range(2):
        rows = [_row(i, _png(i)) for i in range(shard * 30, shard * 30 + 30)]
        for row in rows:
            if row["id"] in ("t:3", "t:50"):
                row["image"] = None
            if row["id"] == "t:5":
                row["image"] = b"not an image"
        pq.write_table(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), root / f"part-{shard}.parquet",
                       row_group_size=8)
    from medcl.corpus.store import CorpusShard, write_corpus_manifest
    from medcl.hashing import sha256_file

    write_corpus_manifest(root, [CorpusShard(f"part-{s}.parquet", 30, sha256_file(root / f"part-{s}.parquet"))
                                 for s in range(2)], {"t": 60})  # pretraining reads what the manifest lists
    return root


def test_plan_counts_from_footers_and_draws_a_seeded_heldout_of_decodable_rows(corpus, tmp_path):
    plan = plan_corpus(CorpusData(path=str(corpus), heldout=6, image_size=8))
    assert (plan.rows, plan.caption_only, plan.train_rows) == (60, 2, 52)
    assert len(plan.heldout_ids) == 6 and not plan.heldout_ids & {"t:3", "t:5", "t:50"}
    assert plan.heldout.images.shape == (6, 8, 8, 3) and len(plan.heldout.captions) == 6
    assert plan_corpus(CorpusData(path=str(corpus), heldout=6, image_size=8)).heldout_ids == plan.heldout_ids
    assert plan_corpus(CorpusData(path=str(corpus), heldout=6, image_size=8, seed=1)).heldout_ids != plan.heldout_ids
    limited = plan_corpus(CorpusData(path=str(corpus), heldout=4, image_size=8, limit=45))
    assert (limited.rows, limited.caption_only) == (45, 1)  # t:50 is past the limit
    assert all(int(i[2:]) < 45 for i in limited.heldout_ids)
    with pytest.raises(PretrainConfigError, match="data.path"):
        plan_corpus(CorpusData(path=str(tmp_path / "nothing"), heldout=4))


def test_decode_rows_keeps_decodable_rows_not_held_out():
    table = pa.Table.from_pylist([_row(0, _png(0)), _row(1, None), _row(2, b"junk"), _row(3, _png(90)),
                                  _row(4, _png(200))], schema=CORPUS_SCHEMA)
    out = decode_rows(table, image_size=4, exclude=frozenset({"t:3"}))
    assert out["pixels"].shape == (2, 4, 4, 3) and out["pixels"].dtype == np.uint8
    assert list(out["caption"]) == ["scan 0", "scan 4"]
    assert out["pixels"][1, 0, 0, 0] == 200  # rows stay matched with their captions


class _State:
    data_pass = 0


@pytest.mark.ray
def test_batches_are_seeded_per_pass_and_passes_follow_each_other(ray_session):
    import ray.data

    rows = [{"pixels": np.full((2, 2, 3), i, np.uint8), "caption": str(i)} for i in range(24)]
    ds = ray.data.from_items(rows, override_num_blocks=1)
    state = _State()
    source = StreamBatches(ds, local_batch_size=4, seed=7, state=state)
    order = lambda p: [c for _, captions in source.one_pass(p) for c in captions]  # noqa: E731
    first, again, second = order(0), order(0), order(1)
    assert first == again and first != second and sorted(first) == sorted(second) == sorted(map(str, range(24)))
    assert pass_seed(7, 0) != pass_seed(7, 1) and pass_seed(7, 0) != pass_seed(8, 0)
    steps = list(source.batches(9, start_step=0))
    assert len(steps) == 9 and state.data_pass == 1 and all(images.shape == (4, 2, 2, 3) for images, _ in steps)
    assert [c for _, captions in steps[:6] for c in captions] == first  # pass 0, then pass 1 begins


@pytest.mark.ray
def test_each_rank_gets_as_many_full_batches_of_the_training_rows(ray_session, corpus):
    data = CorpusData(path=str(corpus), heldout=6, image_size=8)
    plan = plan_corpus(data)
    dataset = training_dataset(plan.files, data, exclude=plan.heldout_ids, seed=3)
    shards = dataset.streaming_split(2, equal=True)  # what ray.train.DataConfig does for 2 workers
    got: dict[int, list] = {}

    def consume(rank: int) -> None:
        got[rank] = list(StreamBatches(shards[rank], local_batch_size=4, seed=3, state=_State()).one_pass(0))

    threads = [threading.Thread(target=consume, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(got[0]) == len(got[1]) >= 5 and all(len(c) == 4 for r in got for _, c in got[r])
    seen = [c for r in got for _, captions in got[r] for c in captions]
    assert len(seen) == len(set(seen)) and len(seen) > plan.train_rows - 1 - 2 * 4  # one undecodable row
    assert not set(seen) & (set(plan.heldout.captions) | {"scan 3", "scan 5", "scan 50"})


@pytest.mark.ray
def test_a_corpus_stream_needs_a_cpu_beside_the_workers(ray_session, corpus):
    from medcl.config import ConfigError
    from medcl.pretrain.config import validate_pretrain
    from medcl.pretrain.inputs import check_stream_cpus

    def config(workers: int, source: str = "corpus"):
        data = {"source": "corpus", "path": str(corpus), "heldout": 4} if source == "corpus" else {}
        train = {"workers": workers, "batch_size": 8, "steps": 1}
        return validate_pretrain({"name": "x", "data": data, "train": train})

    with pytest.raises(ConfigError, match="train.cpus_per_worker"):
        check_stream_cpus(config(2))  # the test Ray has 2 CPUs: none left for the decode tasks
    check_stream_cpus(config(1))
    check_stream_cpus(config(2, source="synthmed"))
