"""MoE-Adapters: top-k routing against a hand computation, frozen experts kept bit for bit through
the next task, parameter counts against an independent count, untrained tasks on the frozen base."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from pydantic import ValidationError

from medcl.models import ModelLoadError
from medcl.models.moe_adapter import MoEAdapter, attach
from medcl.strategies import build_strategy
from strategy_harness import eval_logits, make_ctx, synthmed_tasks, train_stage

VIT = "medcl-tiny-vit-p4"  # image tower: 3 blocks of width 64; text tower: 2 blocks of width 64


def _adapter(top_k=2, experts=5, batch_first=True) -> MoEAdapter:
    torch.manual_seed(0)
    adapter = MoEAdapter(6, num_experts=experts, num_tasks=2, top_k=top_k, bottleneck=3, dropout=0.0, scale=0.1,
                         noise_epsilon=0.01, batch_first=batch_first)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    adapter.task = 1
    return adapter.eval()


def test_the_router_keeps_the_top_k_experts_with_softmax_weights():
    adapter, h = _adapter(), torch.randn(4, 6)
    gates = adapter.gates(h)
    logits = h @ adapter.w_gate[1]
    for n in range(4):
        top = sorted(range(5), key=lambda e: -float(logits[n, e].detach()))[:2]
        assert set(gates[n].nonzero().flatten().tolist()) == set(top)
        weights = torch.exp(logits[n, top]) / torch.exp(logits[n, top]).sum()
        torch.testing.assert_close(gates[n, top], weights)


@pytest.mark.parametrize("batch_first", [True, False])
def test_the_output_is_the_gate_weighted_sum_of_the_experts(batch_first):
    adapter, x = _adapter(batch_first=batch_first), torch.randn(3, 4, 6)  # (N, L, D) or (L, N, D)
    xb = x if batch_first else x.transpose(0, 1)
    gates = adapter.gates(xb[:, 0])
    dense = sum(gates[:, e, None, None] * adapter.experts[e](xb) for e in range(5))
    out = adapter(x)
    torch.testing.assert_close(out if batch_first else out.transpose(0, 1), dense)


def _moe_count(blocks: int, width: int, experts: int, r: int, tasks: int, routers: int) -> int:
    per_expert = width * r + r + r * width + width
    return blocks * (experts * per_expert + routers * 2 * width * experts)


def test_frozen_experts_keep_their_values_and_the_counts_match_an_independent_count():
    strategy = build_strategy("moe_adapters", {"num_experts": 4, "bottleneck": 8})
    ctx = make_ctx(strategy, synthmed_tasks(), model_name=VIT)
    base_count = sum(p.numel() for p in ctx.model.parameters())
    strategy.setup(ctx)
    train_stage(strategy, ctx, 0, lr=0.5)
    metrics = strategy.extra_metrics(ctx)
    assert metrics["moe_blocks_image"] == 3 and metrics["moe_blocks_text"] == 2
    assert metrics["moe_parameters"] == _moe_count(5, 64, 4, 8, 3, routers=3)
    assert metrics["total_parameters"] == base_count + metrics["moe_parameters"]
    assert metrics["trainable_parameters"] == _moe_count(5, 64, 4, 8, 3, routers=1)  # every expert, router 1
    assert metrics["frozen_experts"] == sum(len(f) for f in strategy.frozen.values()) and 5 <= metrics["frozen_experts"] <= 10
    state = {n: t.clone() for n, t in ctx.model.state_dict().items()}
    frozen = {f"{block}.moe_adapter.experts.{e}.": None for block, es in strategy.frozen.items() for e in es}
    kept = {n: t for n, t in state.items() if any(n.startswith(prefix) for prefix in frozen)}
    router_1 = {n: t for n, t in state.items() if n.endswith(("w_gate.0", "w_noise.0"))}
    base = {n: t for n, t in state.items() if ".moe_adapter." not in n}
    frozen_before = {block: set(es) for block, es in strategy.frozen.items()}
    train_stage(strategy, ctx, 1, lr=0.5)
    after = ctx.model.state_dict()
    assert kept and all(torch.equal(after[n], t) for n, t in {**kept, **router_1, **base}.items())
    trained = [n for n in after if ".moe_adapter.experts." in n and n not in kept and not torch.equal(after[n], state[n])]
    assert trained  # the unfrozen experts did learn
    unfrozen_numel = sum(after[n].numel() for n in after if ".moe_adapter.experts." in n and n not in kept)
    assert strategy.extra_metrics(ctx)["trainable_parameters"] == unfrozen_numel + 5 * 2 * 64 * 4
    assert all(frozen_before[b] <= strategy.frozen[b] for b in frozen_before)


def test_an_untrained_task_is_evaluated_with_the_frozen_base_and_a_trained_one_with_its_router():
    strategy = build_strategy("moe_adapters", {"num_experts": 4})
    ctx = make_ctx(strategy, synthmed_tasks(), model_name=VIT)
    base = copy.deepcopy(ctx.model)
    strategy.setup(ctx)
    train_stage(strategy, ctx, 0, lr=0.5)
    reference = build_strategy("finetune")
    base_ctx = make_ctx(reference, synthmed_tasks(), model_name=VIT)
    base_ctx.model = base
    expected, got = eval_logits(reference, base_ctx), eval_logits(strategy, ctx)
    torch.testing.assert_close(got[2], expected[2])
    assert not torch.allclose(got[0], expected[0])
    with strategy.eval_model(ctx, 0):
        assert all(a.task == 0 for a in strategy.adapters.values())
    assert all(a.task is None for a in strategy.adapters.values())


def test_towers_without_transformer_blocks_are_named_and_a_model_without_any_is_an_error(caplog):
    strategy = build_strategy("moe_adapters", {"num_experts": 2})
    ctx = make_ctx(strategy, synthmed_tasks(), model_name="medcl-tiny")  # ResNet image tower
    with caplog.at_level(logging.WARNING):
        strategy.setup(ctx)
    assert "image tower has no transformer block" in caplog.text
    assert strategy.extra_metrics(ctx)["moe_blocks_image"] == 0
    with pytest.raises(ModelLoadError, match="transformer blocks"):
        attach(torch.nn.Sequential(torch.nn.Linear(3, 3)), num_tasks=2)


def test_most_chosen_and_bad_parameters():
    counts = torch.tensor([3, 0, 7, 7, 1])
    assert build_strategy("moe_adapters").most_chosen(counts, 2) == {2, 3}
    assert build_strategy("moe_adapters").most_chosen(counts, 0) == {0, 2, 3, 4}
    with pytest.raises(ValidationError, match="top_k"):
        build_strategy("moe_adapters", {"num_experts": 2, "top_k": 3})
    with pytest.raises(ValidationError, match="bottleneck"):
        build_strategy("moe_adapters", {"bottleneck": 0})
