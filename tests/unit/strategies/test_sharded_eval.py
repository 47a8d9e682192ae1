"""Evaluation sharded over two gloo ranks (rows ``r::2``) gives exactly one process's accuracy and AUC,
through each strategy's ``eval_model`` (the zero-shot head of finetune, iCaRL's NME head after herding)."""
from __future__ import annotations

import json

import torch

from medcl.engine.evaluate import evaluate_tasks
from medcl.strategies import build_strategy
from strategy_harness import _bundle, make_ctx, synthmed_tasks

STRATEGIES = {"finetune": {}, "icarl": {"buffer_size": 15}}


def _figures(rank: int = 0, world: int = 1) -> dict:
    bundle = _bundle("medcl-tiny")
    out = {}
    for name, params in STRATEGIES.items():
        strategy = build_strategy(name, params)
        ctx = make_ctx(strategy, synthmed_tasks())
        ctx.rank, ctx.world_size = rank, world
        strategy.after_stage(ctx)  # iCaRL herds task 0's exemplars (features all-gathered over ranks)
        out[name] = evaluate_tasks(ctx, strategy, image_size=bundle.image_size, mean=bundle.mean, std=bundle.std,
                                   batch_size=7)
    return out


def _rank_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(_figures(rank, 2), f)
    dist.destroy_process_group()


def test_two_ranks_evaluate_exactly_as_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    expected = json.loads(json.dumps(_figures()))  # NaN-safe round trip, as the ranks wrote theirs
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == expected, f"rank {rank}"
