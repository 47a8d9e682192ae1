"""Each method's defaults are its authors' (the source is cited in the strategy's docstring and in
docs/methods.md, "Defaults of each method"); a change here must come with a new source."""
from __future__ import annotations

import pytest

from medcl.config import TrainSection
from medcl.strategies import STRATEGIES

AUTHORS_DEFAULTS = [  # (strategy, field, value, source)
    ("zscl", "l2", 1.0, "ZSCL mtil/scripts/ZSCL.sh --l2 1"),
    ("zscl", "temperature", 2.0, "ZSCL mtil/src/args.py --T 2"),
    ("zscl", "ensemble_period", 0.1, "ZSCL.sh --we --avg_freq 100 of --iterations 1000"),
    ("zscl", "text_features", "teacher_captions", "ZSCL finetune.py: ref_model(None, ref_texts)"),
    ("wiseft", "weight", 0.8, "ZSCL mtil/scripts/WiSE_finetune.sh --wise_ft_alpha 0.8"),
    ("l2", "lam", 1.0, "ZSCL mtil/scripts/wc.sh --l2 1"),
    ("lwf", "variant", "mtil", "ZSCL mtil/scripts/lwf.sh"),
    ("lwf", "temperature", 2.0, "ZSCL mtil/src/args.py --T 2"),
    ("icarl", "classifier", "nme", "Rebuffi et al. 2017, Algorithm 1"),
    ("ewc", "online", False, "Kirkpatrick et al. 2017: one penalty per task"),
    ("moe_adapters", "bottleneck", 64, "MoE-Adapters4CL MTIL scripts"),
    ("moe_adapters", "num_experts", 22, "MoE-Adapters4CL MTIL scripts"),
    ("moe_adapters", "top_k", 2, "MoE-Adapters4CL MTIL scripts"),
    ("primed", "alpha", 1.0, "PRIMED, L_train"),
    ("primed", "beta", 0.25, "PRIMED, L_train"),
    ("mslora_cr", "rank", 64, "MSLoRA-CR paper: r = 64"),
]


@pytest.mark.parametrize("strategy, field, value, source", AUTHORS_DEFAULTS,
                         ids=[f"{s}.{f}" for s, f, _, _ in AUTHORS_DEFAULTS])
def test_strategy_default_is_the_authors(strategy, field, value, source):
    params = STRATEGIES.get(strategy).Params.model_fields
    assert params[field].default == value, f"{strategy}.{field}: expected {value!r} ({source})"


def test_train_defaults_are_the_mtil_protocol():
    """ZSCL's mtil/src/models/finetune.py and args.py: AdamW, cosine after a warm-up of 10 % of the
    iterations, no gradient clipping, the logit scale excluded from the optimiser, label smoothing 0.2."""
    train = TrainSection(steps_per_task=10)
    assert (train.schedule, train.warmup_steps, train.grad_clip, train.logit_scale, train.label_smoothing,
            train.weight_decay) == ("cosine", None, None, "frozen", 0.2, 0.0)


def test_a_frozen_logit_scale_is_left_out_of_the_optimiser():
    import torch

    from medcl.engine.optim import build_optimizer, optimised_parameters

    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(2.6))
    model.weight = torch.nn.Parameter(torch.ones(3))
    train = TrainSection(steps_per_task=10, lr=0.1)
    params = optimised_parameters(list(model.parameters()), model, train.logit_scale)
    assert params == [model.weight]
    optimizer, scheduler = build_optimizer(params, train, total_steps=10)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1 / 1)  # warm-up: 1 step of round(0.1 * 10) = 1
    (model.weight.sum() + model.logit_scale).backward()
    optimizer.step()
    assert model.logit_scale.item() == pytest.approx(2.6)
    assert optimised_parameters(list(model.parameters()), model, "trainable") == [model.logit_scale, model.weight]
