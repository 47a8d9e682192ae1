"""The LoRA pool and the pool strategies without Ray: which adapters train, which are evaluated,
adapter files, checkpoint files (medcl.models.lora, medcl.strategies.lora_pool)."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from medcl.config import TrainSection
from medcl.data.synthmed import SynthMed
from medcl.engine.context import TrainContext
from medcl.engine.preprocess import to_model_input
from medcl.models import ModelLoadError, clip_logits, create_model, state_fingerprint
from medcl.models.lora import LoraPool
from medcl.strategies import build_strategy
from medcl.strategies.lora_pool import BASE_FILE

SMALL = {"rank": 4, "lora_alpha": 8}


@pytest.fixture(scope="module")
def tasks():
    """xray-1, ultrasound-1, xray-2: a repeated modality."""
    return SynthMed().build({"domains": ["xray", "ultrasound"], "tasks_per_domain": 2, "num_tasks": 3,
                             "train_per_class": 4, "val_per_class": 1, "test_per_class": 2}, seed=0)


@functools.lru_cache(maxsize=None)
def _bundle(model_name: str):
    torch.manual_seed(0)
    return create_model(model_name)


def make_ctx(tasks, model_name: str = "medcl-tiny-vit") -> TrainContext:
    """A fresh copy of the seed-0 model (the same base every time, as a restarted worker builds it)."""
    bundle = _bundle(model_name)
    return TrainContext(model=copy.deepcopy(bundle.model), tokenizer=bundle.tokenizer, tasks=tasks,
                        stages=build_strategy("finetune").stages(tasks), device=torch.device("cpu"),
                        preprocess=lambda images: to_model_input(images, bundle.image_size, bundle.mean, bundle.std),
                        train=TrainSection(batch_size=8, steps_per_task=2))


def setup_strategy(name, tasks, **params):
    strategy, ctx = build_strategy(name, {**SMALL, **params}), make_ctx(tasks)
    strategy.setup(ctx)
    return strategy, ctx


def train_stage(strategy, ctx, stage_index: int, steps: int = 3) -> None:
    """The engine's stage: before_stage, optimiser over trainable_parameters, after_stage."""
    ctx.stage_index = stage_index
    strategy.before_stage(ctx)
    optimizer = torch.optim.AdamW(strategy.trainable_parameters(ctx), lr=0.05)
    split = ctx.tasks[ctx.task_index].split("train")
    ctx.model.train()
    for step in range(steps):
        rows = slice(4 * step, 4 * step + 8)
        batch = ctx.make_batch(split.images[rows], split.labels[rows], np.full(len(split.labels[rows]), ctx.task_index))
        optimizer.zero_grad()
        strategy.loss(ctx, batch)["loss"].backward()
        optimizer.step()
    strategy.after_stage(ctx)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


@torch.no_grad()
def eval_logits(strategy, ctx, k: int) -> torch.Tensor:
    with strategy.eval_model(ctx, k) as model:
        model.eval()
        images = ctx.preprocess(ctx.tasks[k].split("test").images)
        return clip_logits(model.encode_image(images, normalize=True), ctx.class_embeddings(k, model),
                           model.logit_scale.exp())


@torch.no_grad()
def perturb(strategy, index: int, scale: float = 0.5) -> None:
    generator = torch.Generator().manual_seed(100 + index)
    for p in strategy.pool.adapter_parameters(index).values():
        p.add_(scale * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("name", ["mslora_cr", "lora_separate"])
def test_only_adapter_t_changes_while_task_t_trains(name, tasks):
    strategy, ctx = setup_strategy(name, tasks)
    train_stage(strategy, ctx, 0)
    before = snapshot(ctx.model)
    ctx.stage_index = 1
    strategy.before_stage(ctx)
    trainable = strategy.trainable_parameters(ctx)
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in strategy.pool.adapter_parameters(1).values())
    assert {id(p) for p in ctx.model.parameters() if p.requires_grad} == {id(p) for p in trainable}
    train_stage(strategy, ctx, 1)
    after = snapshot(ctx.model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    own = {n for n in before if ".task2." in n}
    assert changed and changed <= own  # adapter 2 moved; the base and adapters 1, 3 are bit-identical
    assert {n for n in own if "lora_B" in n} <= changed


def test_lora_pool_counts_only_the_trainable_adapter_and_freezes_the_base(tasks):
    ctx = make_ctx(tasks)
    pool = LoraPool(ctx.model, 3, rank=4, lora_alpha=8)
    assert not any(p.requires_grad for p in ctx.model.parameters())
    pool.set_active([0, 1], trainable=1)
    names = [n for n, p in ctx.model.named_parameters() if p.requires_grad]
    assert names and all(".task2." in n for n in names)
    # attention (two LoRA pairs: q/k/v and output) + MLP c_fc + c_proj, 2 blocks in each tower
    assert len(pool.lora_pairs(1)) == 4 * 2 * 2 and len(names) == 2 * len(pool.lora_pairs(1))
    with pytest.raises(ValueError, match="must be active"):
        pool.set_active([0], trainable=1)


def test_targets_that_match_nothing_say_what_to_do(tasks):
    ctx = make_ctx(tasks)
    with pytest.raises(ModelLoadError, match="match no module.*strategy.targets"):
        LoraPool(ctx.model, 2, targets=r"visual\.nothing_here")


def test_a_resnet_image_tower_gets_adapters_on_the_text_tower_only(tasks, caplog):
    ctx = make_ctx(tasks, "medcl-tiny")
    pool = LoraPool(ctx.model, 2, rank=2, lora_alpha=2)
    assert pool.targets and all(t.startswith("transformer.") for t in pool.targets)
    assert "image tower" in caplog.text


def test_evaluation_of_task_k_uses_exactly_adapters_1_to_k(tasks):
    strategy, ctx = setup_strategy("mslora_cr", tasks)
    strategy.trained = [0, 1, 2]
    for k in range(3):
        perturb(strategy, k)
    base = [eval_logits(strategy, ctx, k) for k in range(3)]
    perturb(strategy, 2)  # adapter 3 changes: tasks 1 and 2 are evaluated without it
    again = [eval_logits(strategy, ctx, k) for k in range(3)]
    assert torch.equal(base[0], again[0]) and torch.equal(base[1], again[1]) and not torch.allclose(base[2], again[2])
    perturb(strategy, 0)  # adapter 1 is in every task's set
    assert all(not torch.allclose(a, b) for a, b in zip(again, [eval_logits(strategy, ctx, k) for k in range(3)]))
    strategy.pool.set_active([0, 1])  # the same sum of adapters by hand
    with torch.no_grad():
        images = ctx.preprocess(ctx.tasks[1].split("test").images)
        by_hand = clip_logits(ctx.model.encode_image(images, normalize=True), ctx.class_embeddings(1),
                              ctx.model.logit_scale.exp())
    torch.testing.assert_close(eval_logits(strategy, ctx, 1), by_hand)


def test_untrained_tasks_and_separate_adapters(tasks):
    strategy, ctx = setup_strategy("lora_separate", tasks)
    strategy.trained = [0, 1]
    zero_shot = eval_logits(strategy, ctx, 2)  # task 3 not trained: the base model
    for k in range(3):
        perturb(strategy, k)
    assert torch.equal(zero_shot, eval_logits(strategy, ctx, 2))
    own = eval_logits(strategy, ctx, 1)
    perturb(strategy, 0)  # another task's adapter never takes part
    assert torch.equal(own, eval_logits(strategy, ctx, 1))
    incremental, ctx2 = setup_strategy("lora_incremental", tasks)
    incremental.trained = [0]
    perturb(incremental, 0)
    perturb(incremental, 2)  # untrained task 3 at time 1: adapter 1 only
    with torch.no_grad():
        incremental.pool.set_active([0])
        images = ctx2.preprocess(ctx2.tasks[2].split("test").images)
        by_hand = clip_logits(ctx2.model.encode_image(images, normalize=True), ctx2.class_embeddings(2),
                              ctx2.model.logit_scale.exp())
    torch.testing.assert_close(eval_logits(incremental, ctx2, 2), by_hand)


def test_adapter_save_load_round_trip(tasks, tmp_path):
    strategy, ctx = setup_strategy("lora_incremental", tasks)
    perturb(strategy, 1)
    path = strategy.pool.save_adapter(1, tmp_path / "adapter-2.safetensors")
    fresh, _ = setup_strategy("lora_incremental", tasks)
    saved = strategy.pool.adapter_state(1)
    assert not all(torch.equal(saved[n], t) for n, t in fresh.pool.adapter_state(1).items())
    fresh.pool.load_adapter(1, path)
    loaded = fresh.pool.adapter_state(1)
    assert sorted(loaded) == sorted(saved) and all(torch.equal(loaded[n], saved[n]) for n in saved)
    with pytest.raises(ModelLoadError, match="does not hold adapter task3"):
        fresh.pool.load_adapter(2, path)


def test_checkpoint_files_hold_the_base_once_and_each_adapter_separately(tasks):
    strategy, ctx = setup_strategy("mslora_cr", tasks)
    train_stage(strategy, ctx, 0)
    first = strategy.model_files(ctx)
    assert sorted(first) == ["adapter-1.safetensors", BASE_FILE]
    assert not any(".task" in n for n in first[BASE_FILE]) and all(".task1." in n for n in first["adapter-1.safetensors"])
    train_stage(strategy, ctx, 1)
    assert sorted(strategy.model_files(ctx)) == ["adapter-1.safetensors", "adapter-2.safetensors"]
    state = strategy.state_dict()
    assert state["trained"] == [0, 1]
    other, ctx2 = setup_strategy("mslora_cr", tasks)
    with torch.no_grad():
        next(iter(ctx2.model.parameters())).add_(1.0)  # a different base than the checkpoint's
    other.base_fingerprint = state_fingerprint(other.pool.base_state())  # as setup computes it for the rebuilt base
    with pytest.raises(ModelLoadError, match="frozen base model differs"):
        other.load_state_dict(state)
