"""MSLoRA-CR's regularisers (docs/methods.md#4-mslora-cr) against hand computations and their intended direction."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medcl.strategies.mslora_cr import adapter_similarity, contrastive_regularisation, orthogonality

from test_lora_pool import SMALL, make_ctx  # noqa: F401  (same directory)
from medcl.data.synthmed import SynthMed
from medcl.strategies import build_strategy


def test_similarity_and_l_cr_match_a_hand_computation():
    current = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    peer = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])]
    sim = (math.exp(-1.0) + math.exp(-2.0)) / 2
    assert adapter_similarity(current, peer).item() == pytest.approx(sim)
    assert contrastive_regularisation(current, [(peer, True)]).item() == pytest.approx(1 - sim)
    assert contrastive_regularisation(current, [(peer, False)]).item() == pytest.approx(sim)
    assert contrastive_regularisation(current, [(peer, True), (peer, False)]).item() == pytest.approx(1.0)
    assert contrastive_regularisation(current, []).item() == 0.0


def test_l_cr_falls_towards_a_same_modality_peer_and_rises_towards_another_modality():
    torch.manual_seed(0)
    peer = [torch.randn(4, 8) * 0.3, torch.randn(16, 4) * 0.3]
    start = [torch.randn(4, 8) * 0.3, torch.randn(16, 4) * 0.3]
    closer = [s + 0.5 * (p - s) for s, p in zip(start, peer)]
    for same, direction in ((True, -1), (False, +1)):
        before = contrastive_regularisation(start, [(peer, same)]).item()
        after = contrastive_regularisation(closer, [(peer, same)]).item()
        assert (after - before) * direction > 0


def test_l_cr_gradient_moves_only_the_current_adapter():
    current = [torch.randn(2, 3, requires_grad=True)]
    peer = [torch.randn(2, 3, requires_grad=True)]
    contrastive_regularisation(current, [(peer, True)]).backward()
    assert current[0].grad is not None and current[0].grad.abs().sum() > 0 and peer[0].grad is None


def test_l_ortho_is_zero_for_orthonormal_factors_and_matches_a_hand_computation():
    torch.manual_seed(0)
    q_a, _ = torch.linalg.qr(torch.randn(8, 3))   # A (3, 8): orthonormal rows
    q_b, _ = torch.linalg.qr(torch.randn(10, 3))  # B (10, 3): orthonormal columns
    assert orthogonality([(q_a.T, q_b)]).item() == pytest.approx(0.0, abs=1e-10)
    a, b = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0], [0.0]])  # r = 1: A A^T = 2, B^T B = 4
    a2, b2 = torch.zeros(1, 2), torch.zeros(2, 1)                    # zero factors: 1 + 1
    assert orthogonality([(a, b)]).item() == pytest.approx((2 - 1) ** 2 + (4 - 1) ** 2)
    assert orthogonality([(a, b), (a2, b2)]).item() == pytest.approx((10 + 2) / 2)


def test_the_strategy_loss_reads_each_task_modality():
    """Task 3 (xray-2) is pulled towards task 1 (xray-1) and pushed from task 2 (ultrasound-1)."""
    tasks = SynthMed().build({"domains": ["xray", "ultrasound"], "tasks_per_domain": 2, "num_tasks": 3,
                              "train_per_class": 4, "val_per_class": 1, "test_per_class": 2}, seed=0)
    strategy, ctx = build_strategy("mslora_cr", SMALL), make_ctx(tasks)
    strategy.setup(ctx)
    ctx.stage_index = 2
    strategy.before_stage(ctx)
    split = tasks[2].split("train")
    batch = ctx.make_batch(split.images[:4], split.labels[:4], np.full(4, 2))
    terms = strategy.loss(ctx, batch)
    p = [strategy.adapter_tensors(k) for k in range(3)]
    expected = (1 - adapter_similarity(p[2], p[0])) + adapter_similarity(p[2], p[1])
    assert terms["cr"].item() == pytest.approx(expected.item(), rel=1e-6)
    every_adapter = [pair for k in range(3) for pair in strategy.pool.lora_pairs(k)]
    assert terms["ortho"].item() == pytest.approx(orthogonality(every_adapter).item(), rel=1e-6)
    total = terms["ce"] + 0.1 * terms["cr"] + 0.01 * terms["ortho"]
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_l_ortho_is_skipped_on_the_first_task():
    """The authors' code adds L_ortho from the second task on."""
    tasks = SynthMed().build({"domains": ["xray", "ultrasound"], "num_tasks": 2, "train_per_class": 4, "val_per_class": 1,
                              "test_per_class": 2}, seed=0)
    strategy, ctx = build_strategy("mslora_cr", SMALL), make_ctx(tasks)
    strategy.setup(ctx)
    strategy.before_stage(ctx)
    split = tasks[0].split("train")
    terms = strategy.loss(ctx, ctx.make_batch(split.images[:4], split.labels[:4], np.zeros(4, dtype=int)))
    assert terms["ortho"].item() == 0.0 and terms["loss"].item() == pytest.approx(terms["ce"].item(), rel=1e-6)
