"""iCaRL: herding against a brute-force reading of its objective, the class-balanced budget, NME
logits against an independent nearest-mean computation, the distillation term at a task's start."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from medcl.models.norm import eval_mode
from medcl.strategies import build_strategy
from medcl.strategies.exemplars import ExemplarMemory, herding
from strategy_harness import eval_logits, make_ctx, synthmed_tasks, train_stage


def _unit(angles_degrees):
    a = np.radians(np.asarray(angles_degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_herding_picks_the_sample_nearest_the_class_mean_then_the_best_pair():
    features = _unit([0, 10, 35, 90, 170, -60])
    mu = features.mean(axis=0)
    first = int(np.argmin(np.linalg.norm(features - mu, axis=1)))
    # The second pick: of every pair that contains the first, the one whose mean is nearest mu.
    second = min((j for j in range(len(features)) if j != first),
                 key=lambda j: np.linalg.norm(mu - (features[first] + features[j]) / 2))
    chosen = herding(torch.from_numpy(features).float(), 3)
    assert chosen[:2] == [first, second] and len(set(chosen)) == 3
    assert herding(torch.from_numpy(features).float(), 10) == herding(torch.from_numpy(features).float(), 6)
    assert sorted(herding(torch.from_numpy(features).float(), 6)) == list(range(6))  # at most n, each once


def test_herding_matches_an_exhaustive_greedy_search():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(9, 4))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    mu, picked = features.mean(axis=0), []
    for k in range(1, 5):
        rest = [j for j in range(9) if j not in picked]
        picked.append(min(rest, key=lambda j: np.linalg.norm(mu - features[picked + [j]].mean(axis=0))))
    assert herding(torch.from_numpy(features), 4) == picked


def test_the_budget_is_shared_by_every_class_seen_and_old_classes_keep_their_first_exemplars():
    memory, rng = ExemplarMemory(buffer_size=13), np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 6)
    memory.add_task(0, labels, F.normalize(torch.from_numpy(rng.normal(size=(18, 5))), dim=1))
    assert [len(v) for v in memory.classes.values()] == [4, 4, 4]  # floor(13 / 3)
    before = {key: list(v) for key, v in memory.classes.items()}
    memory.add_task(1, np.repeat(np.arange(3), 2), F.normalize(torch.from_numpy(rng.normal(size=(6, 5))), dim=1))
    assert [len(v) for v in memory.classes.values()] == [2] * 6 and len(memory) == 12  # floor(13 / 6)
    assert all(memory.classes[key] == before[key][:2] for key in before)
    restored = ExemplarMemory(13)
    restored.load_state_dict(memory.state_dict())
    assert restored.classes == memory.classes
    with pytest.raises(ValueError, match="buffer_size"):
        ExemplarMemory(14).load_state_dict(memory.state_dict())


def test_distillation_is_zero_at_the_start_of_a_task_and_not_after():
    strategy = build_strategy("icarl", {"buffer_size": 10})
    ctx = make_ctx(strategy, synthmed_tasks())
    train_stage(strategy, ctx, 0)
    terms = train_stage(strategy, ctx, 1)
    assert terms[0]["distill"] == pytest.approx(0.0, abs=1e-6) and terms[1]["distill"] > 1e-6
    assert strategy.extra_metrics(ctx) == {"exemplars": 10, "exemplar_bytes": 10 * 32 * 32}


def test_nme_logits_are_the_scaled_cosine_to_the_exemplar_means():
    strategy = build_strategy("icarl", {"buffer_size": 15, "classifier": "nme"})
    ctx = make_ctx(strategy, synthmed_tasks())
    train_stage(strategy, ctx, 0)
    logits = eval_logits(strategy, ctx)
    task = ctx.tasks[0]
    with torch.no_grad(), eval_mode(ctx.model):
        means = []
        for c in range(len(task.classes)):
            rows = strategy.memory.classes[(0, c)]
            features = ctx.model.encode_image(ctx.preprocess(task.split("train").images[rows]), normalize=True)
            means.append(F.normalize(features.mean(dim=0), dim=0))
        test = ctx.model.encode_image(ctx.preprocess(task.split("test").images), normalize=True)
        scale = ctx.model.logit_scale.exp()
    expected = scale * test @ torch.stack(means).t()
    torch.testing.assert_close(logits[0], expected, rtol=1e-4, atol=1e-4)
    nearest = torch.cdist(test, torch.stack(means)).argmin(dim=1)  # iCaRL's rule: nearest normalised mean
    assert torch.equal(logits[0].argmax(dim=1), nearest)
    text = build_strategy("icarl", {"buffer_size": 15})  # the default head: the class prompts
    with text.eval_model(ctx, 0) as model:
        assert model is ctx.model
    for k in (1, 2):  # not trained yet, no exemplars: the class prompts
        with strategy.eval_model(ctx, k) as model:
            assert model is ctx.model


def test_bad_parameters_name_themselves():
    with pytest.raises(ValidationError, match="classifier"):
        build_strategy("icarl", {"classifier": "knn"})
    with pytest.raises(ValidationError, match="buffer_size"):
        build_strategy("icarl", {"buffer_size": -1})


def test_exemplar_budget_below_the_class_count_keeps_none_and_falls_back_to_prompts():
    strategy = build_strategy("icarl", {"buffer_size": 3, "classifier": "nme"})
    ctx = make_ctx(strategy, synthmed_tasks())
    train_stage(strategy, ctx, 0)
    assert len(strategy.memory) == 0 and all(v == [] for v in strategy.memory.classes.values())
    with strategy.eval_model(ctx, 0) as model:
        assert model is ctx.model


def _rank_worker(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks: train nothing, herd task 0's exemplars, save the memory."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    strategy = build_strategy("icarl", {"buffer_size": 15})
    ctx = make_ctx(strategy, synthmed_tasks())
    ctx.rank, ctx.world_size = rank, 2
    strategy.after_stage(ctx)
    torch.save(strategy.state_dict(), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_herd_the_same_exemplars_as_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    single = build_strategy("icarl", {"buffer_size": 15})
    ctx = make_ctx(single, synthmed_tasks())
    single.after_stage(ctx)
    expected = single.state_dict()["memory"]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)["memory"]
        assert torch.equal(got["items"], expected["items"]) and torch.equal(got["classes"], expected["classes"])
