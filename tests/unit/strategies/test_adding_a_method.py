"""docs/adding-a-method.md, tried: its example file is registered and run through the strategy harness.

The page's code block is executed as it is written (nothing is copied into this test), so the page
fails here when the strategy contract changes under it.
"""
from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest
import torch

from medcl.config import load_experiment, strategy_params
from medcl.models.norm import eval_mode
from medcl.strategies import STRATEGIES, Strategy, build_strategy
from strategy_harness import eval_logits, make_ctx, synthmed_tasks, train_stage

REPO = Path(__file__).resolve().parents[3]
PAGE = REPO / "docs" / "adding-a-method.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def code_blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(PAGE.read_text()) if lang == language]


@pytest.fixture
def example(monkeypatch):
    """The page's strategy file, executed as a module, registered in a copy of the registry."""
    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))
    source = next(b for b in code_blocks("python") if "@register_strategy" in b)
    module = types.ModuleType("feature_distill_example")
    exec(compile(source, str(PAGE), "exec"), module.__dict__)
    return module


def test_the_page_names_every_hook_of_the_contract():
    hooks = {name for name, _ in inspect.getmembers(Strategy, inspect.isfunction) if not name.startswith("_")}
    rows = "\n".join(line for line in PAGE.read_text().splitlines() if line.startswith("| `"))
    table = set(re.findall(r"`(\w+)\(", rows))
    assert hooks <= table, f"docs/adding-a-method.md does not describe {sorted(hooks - table)}"
    assert table <= hooks, f"docs/adding-a-method.md describes hooks that are gone: {sorted(table - hooks)}"


def test_the_example_registers_and_validates_its_parameters(example):
    assert "feature_distill" in STRATEGIES.names()
    assert build_strategy("feature_distill").params.lam == 1.0
    with pytest.raises(Exception, match="lam"):
        build_strategy("feature_distill", {"lam": -1})
    # The page's `medcl run` command validates as written.
    command = next(line for block in code_blocks("") for line in block.splitlines() if line.startswith("medcl run"))
    args = command.split()
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    config = load_experiment(REPO / args[2], overrides)
    assert config.strategy.name == "feature_distill" and strategy_params(config).lam == 10


def test_the_example_trains_with_its_formula_through_the_harness(example):
    tasks = synthmed_tasks(3)
    strategy = build_strategy("feature_distill", {"lam": 2.0})
    ctx = make_ctx(strategy, tasks)
    strategy.setup(ctx)
    first = train_stage(strategy, ctx, 0, steps=3)
    # The teacher is the model at the start of the stage: no distance on the first step, then some.
    assert first[0]["distill"] == 0.0 and first[-1]["distill"] > 0
    for terms in first:
        assert terms["loss"] == pytest.approx(terms["ce"] + 2.0 * terms["distill"], rel=1e-5)
    assert strategy.teacher is None and strategy.state_dict() == {}
    # The distance is to the start of the current stage, not of the sequence.
    second = train_stage(strategy, ctx, 1, steps=2)
    assert second[0]["distill"] == 0.0
    assert all(torch.isfinite(logits).all() for logits in eval_logits(strategy, ctx))


def test_the_weight_keeps_the_features_closer_to_the_start(example):
    """What the term is for: after the same steps, the image features moved less from the stage's
    start (a LayerNorm ViT, so evaluation does not depend on BatchNorm statistics)."""
    tasks = synthmed_tasks(3)
    drift = {}
    for lam in (0.0, 1.0):
        strategy = build_strategy("feature_distill", {"lam": lam})
        ctx = make_ctx(strategy, tasks, "medcl-tiny-vit")
        strategy.setup(ctx)
        images = ctx.preprocess(tasks[0].split("train").images[:16])
        with torch.no_grad(), eval_mode(ctx.model):
            start = ctx.model.encode_image(images, normalize=True)
        train_stage(strategy, ctx, 0, steps=4, lr=0.05)
        with torch.no_grad(), eval_mode(ctx.model):
            drift[lam] = float(((ctx.model.encode_image(images, normalize=True) - start) ** 2).sum(-1).mean())
    assert 0 < drift[1.0] < 0.5 * drift[0.0]
