"""PRIMED's losses against hand computations on toy tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medcl.primed.losses import ckt_loss, cmc_loss, cosine_matrix, fisher_guard_weights
from medcl.strategies.common import l2_penalty


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _kl(p, q):
    return float(np.sum(p * (np.log(p) - np.log(q))))


@pytest.fixture
def cosines():
    g = torch.Generator().manual_seed(0)
    teacher = torch.rand(3, 3, generator=g, dtype=torch.float64) * 2 - 1
    student = torch.rand(3, 3, generator=g, dtype=torch.float64) * 2 - 1
    return teacher, student


def test_ckt_is_the_sum_of_row_and_column_kl(cosines):
    teacher, student = cosines
    tau = 0.5
    zt, zs = teacher.numpy() / tau, student.numpy() / tau
    rows = sum(_kl(_softmax(zt[r]), _softmax(zs[r])) for r in range(3))
    cols = sum(_kl(_softmax(zt[:, c]), _softmax(zs[:, c])) for c in range(3))
    assert ckt_loss(teacher, student, tau).item() == pytest.approx(rows + cols, rel=1e-5)
    assert ckt_loss(student, student, tau).item() == pytest.approx(0.0, abs=1e-6)
    assert ckt_loss(teacher, student, tau, "mean").item() == pytest.approx((rows + cols) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        ckt_loss(teacher, student, tau, "max")


def test_cmc_is_clip_infonce_in_both_directions(cosines):
    _, student = cosines
    tau = 0.25
    z = student.numpy() / tau
    image_to_text = np.mean([-np.log(_softmax(z[r])[r]) for r in range(3)])
    text_to_image = np.mean([-np.log(_softmax(z[:, c])[c]) for c in range(3)])
    assert cmc_loss(student, tau).item() == pytest.approx(image_to_text + text_to_image, rel=1e-5)


def test_cosine_matrix_normalises_both_sides():
    images = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    texts = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    expected = np.array([[1 / np.sqrt(2), 0.0], [1 / np.sqrt(2), 1.0]])
    assert np.allclose(cosine_matrix(images, texts).numpy(), expected, atol=1e-6)


def test_dfg_importance_is_the_squared_gradient_of_the_non_ce_part():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    out = model(x)
    ce = torch.nn.functional.cross_entropy(out, y)
    non_ce = (out ** 2).mean() + out.sum().sin()  # any differentiable non-CE part
    params = dict(model.named_parameters())
    weights = fisher_guard_weights(non_ce, params)
    (ce + non_ce).backward()  # the graph is still usable after computing W
    model.zero_grad()
    expected = torch.autograd.grad((model(x) ** 2).mean() + model(x).sum().sin(), list(params.values()))
    for (name, w), g in zip(weights.items(), expected):
        assert not w.requires_grad
        assert torch.allclose(w, g ** 2, atol=1e-7), name
    assert not torch.allclose(weights["weight"], torch.zeros_like(weights["weight"]))
    anchor = {n: p.detach() + 0.1 for n, p in params.items()}
    manual = sum((weights[n] * (p.detach() - anchor[n]) ** 2).sum() for n, p in params.items())
    assert l2_penalty(model, anchor, weights).item() == pytest.approx(manual.item(), rel=1e-6)


def test_dfg_weights_are_zero_for_parameters_the_loss_does_not_reach():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    weights = fisher_guard_weights((a * 3).sum(), {"a": a, "b": b})
    assert torch.equal(weights["a"], torch.full((2,), 9.0)) and torch.equal(weights["b"], torch.zeros(2))
