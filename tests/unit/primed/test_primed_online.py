"""PRIMED's online mode, worker side (medcl.primed.online): rank 0's retrieval equals the driver's
plan with the starting model as scorer, and follows the model with the current one."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from medcl.engine.context import Stage, TrainContext
from medcl.engine.preprocess import to_model_input
from medcl.models import create_model
from medcl.primed.online import OnlineReferences, batch_questions, evaluating
from medcl.primed.planner import plan_reference_sets, reference_file
from medcl.primed.scorer import StartingModelScorer
from medcl.primed.stream import read_reference_set
from medcl.strategies.primed import PrimedParams
from primed_fakes import FakeRetriever, synthmed_corpus, synthmed_tasks

PARAMS = PrimedParams(k=6, k_v=1, a=3, b=1, c=2, n=5, retrieval="online")


def _context(seed: int) -> TrainContext:
    torch.manual_seed(seed)  # as a worker builds its model
    bundle = create_model("medcl-tiny")
    tasks = synthmed_tasks()
    return TrainContext(model=bundle.model, tokenizer=bundle.tokenizer, tasks=tasks,
                        stages=[Stage(t.name, (i,)) for i, t in enumerate(tasks)], device=torch.device("cpu"),
                        preprocess=lambda x: to_model_input(x, bundle.image_size, bundle.mean, bundle.std))


@pytest.fixture(scope="module")
def corpus():
    return synthmed_corpus(per_class=3, text_only=4)


@pytest.fixture(scope="module")
def planned(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("planned")
    plan_reference_sets(synthmed_tasks(), out, PARAMS, seed=0, model={"name": "medcl-tiny"},
                        retriever=FakeRetriever(corpus), scorer=StartingModelScorer.build({"name": "medcl-tiny"}, 0),
                        log=lambda m: None)
    return out


def test_the_starting_scorer_retrieves_the_planned_sets(corpus, planned):
    ctx = _context(0)
    online = OnlineReferences(PARAMS.model_copy(update={"online_scorer": "starting"}), ctx, mode="dynamic",
                              image_size=16, retriever=FakeRetriever(corpus))
    with torch.no_grad():  # training moves the model; the starting scorer does not see it
        for p in ctx.model.parameters():
            p.add_(torch.randn_like(p))
    for task in (0, 1):
        ids, pairs = online.refresh(task, ctx.model)
        expected = read_reference_set(planned, task, image_size=16)
        assert ids == pq.read_table(reference_file(planned, task), columns=["id"])["id"].to_pylist() and ids
        assert pairs.captions == expected.captions and np.array_equal(pairs.images, expected.images)
    again_ids, again = online.restore(ids)  # a mid-task resume fetches the same pairs
    assert again_ids == ids and np.array_equal(again.images, pairs.images)
    assert online.refreshes == 2


def test_the_current_scorer_re_ranks_with_the_model_being_trained(corpus, planned):
    ctx = _context(0)
    online = OnlineReferences(PARAMS, ctx, mode="dynamic", image_size=16, retriever=FakeRetriever(corpus))
    ids_start, _ = online.refresh(1, ctx.model)
    assert ids_start == pq.read_table(reference_file(planned, 1), columns=["id"])["id"].to_pylist()
    ctx.model.load_state_dict(_context(1).model.state_dict())  # "trained": other weights
    ctx.model.train()
    buffers = {n: b.clone() for n, b in ctx.model.named_buffers()}
    ids_now, _ = online.refresh(1, ctx.model)
    torch.manual_seed(1)
    other = plan_reference_sets(synthmed_tasks(), planned.parent / "other", PARAMS, seed=0, model={"name": "x"},
                                retriever=FakeRetriever(corpus), scorer=StartingModelScorer.build({"name": "medcl-tiny"}, 1),
                                log=lambda m: None)
    assert other["tasks"][1]["rows"] == len(ids_now)
    assert ids_now == pq.read_table(reference_file(planned.parent / "other", 1), columns=["id"])["id"].to_pylist()
    assert ids_now != ids_start  # the re-rank followed the model
    assert all(m.training for m in ctx.model.modules())  # train mode restored, statistics untouched
    assert all(torch.equal(b, buffers[n]) for n, b in ctx.model.named_buffers())


def test_batch_queries_add_the_batch_classes_prompts(corpus):
    ctx = _context(0)
    extra = batch_questions(ctx.tasks, torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1]), take=2)
    assert [q.question.text for q in extra] == [ctx.tasks[1].class_prompts[c][0] for c in (0, 1)]
    assert {q.level for q in extra} == {"batch"} and {q.take for q in extra} == {2}
    online = OnlineReferences(PARAMS, ctx, mode="dynamic", image_size=16, retriever=FakeRetriever(corpus))
    plain, _ = online.refresh(0, ctx.model)
    with_batch, _ = online.refresh(0, ctx.model, extra)
    assert with_batch[:len(plain)] == plain and len(with_batch) > len(plain)


def test_evaluating_restores_each_modules_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    model.train()
    model[1].eval()
    with evaluating(model) as m:
        assert not any(x.training for x in m.modules()) and not torch.is_grad_enabled()
    assert model.training and model[0].training and not model[1].training


def _online_rank(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks: rank 0 retrieves task 1's set (only it has a retriever), both save it."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    ctx = _context(0)
    ctx.rank, ctx.world_size = rank, 2
    retriever = FakeRetriever(synthmed_corpus(per_class=3, text_only=4)) if rank == 0 else None
    online = OnlineReferences(PARAMS, ctx, mode="dynamic", image_size=16, retriever=retriever)
    ids, pairs = online.refresh(1, ctx.model)
    again_ids, _ = online.restore(ids)
    np.savez(f"{out}/rank{rank}.npz", images=pairs.images, ids=np.array(ids), again=np.array(again_ids),
             captions=np.array(pairs.captions), refreshes=online.refreshes)
    dist.destroy_process_group()


def test_every_rank_gets_rank_0s_pairs(planned, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_online_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    got = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    expected = read_reference_set(planned, 1, image_size=16)
    for rank in (0, 1):
        assert got[rank]["ids"].tolist() == got[rank]["again"].tolist() == \
            pq.read_table(reference_file(planned, 1), columns=["id"])["id"].to_pylist()
        assert np.array_equal(got[rank]["images"], expected.images)
        assert got[rank]["captions"].tolist() == list(expected.captions)
    assert [int(g["refreshes"]) for g in got] == [1, 0]  # only rank 0 retrieved
