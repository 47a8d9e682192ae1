"""Strategies without Ray: each loss term against a hand computation, and every registered
strategy's state through a checkpoint round trip (torch.save -> torch.load(weights_only=True))."""
from __future__ import annotations

import copy
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from medcl.config import ConfigError, TrainSection, validate_experiment
from medcl.data.reference import ReferenceConfig
from medcl.data.synthmed import SynthMed
from medcl.engine.context import TrainContext
from medcl.engine.preprocess import to_model_input
from medcl.engine.sampling import StageSampler
from medcl.models import clip_logits, create_model
from medcl.models.norm import eval_mode
from medcl.strategies import STRATEGIES, build_strategy
from medcl.strategies.ewc import estimate_fisher
from medcl.strategies.common import l2_penalty
from medcl.strategies.common import distill_kl
from medcl.strategies.rehearsal import ReplayBuffer, concat, shard_capacity
from medcl.strategies.wiseft import interpolate_

sys.path.insert(0, str(Path(__file__).parent / "strategies"))
from strategy_harness import eval_logits  # noqa: E402  (the strategy harness's own evaluation)
from medcl.strategies.zscl import distill_ce

TINY_REFERENCE = {"name": "synthmed", "domains": ["ct"], "per_class": 1}
# Parameters that keep each strategy cheap here; strategies not listed run with their defaults.
TEST_PARAMS = {"zscl": {"reference": TINY_REFERENCE, "ensemble_period": 0.5, "l2": 0.1},
               "rehearsal": {"buffer_size": 12}, "ewc": {"fisher_samples": 4}, "icarl": {"buffer_size": 12},
               "moe_adapters": {"num_experts": 4}}


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return create_model("medcl-tiny")


@pytest.fixture(scope="module")
def tasks():
    return SynthMed().build({"num_tasks": 3, "train_per_class": 4, "val_per_class": 1, "test_per_class": 2}, seed=0)


def make_ctx(bundle, tasks, *, model=None, stage_index=0, rank=0, world_size=1) -> TrainContext:
    strategy_stages = build_strategy("finetune").stages(tasks)
    return TrainContext(model=model if model is not None else copy.deepcopy(bundle.model), tokenizer=bundle.tokenizer,
                        tasks=tasks, stages=strategy_stages, device=torch.device("cpu"), rank=rank, world_size=world_size,
                        preprocess=lambda images: to_model_input(images, bundle.image_size, bundle.mean, bundle.std),
                        train=TrainSection(batch_size=8, steps_per_task=2), stage_index=stage_index, total_steps=2)


def task_batch(ctx, task: int, n: int = 8, offset: int = 0):
    split = ctx.tasks[task].split("train")
    rows = slice(offset, offset + n)
    return ctx.make_batch(split.images[rows], split.labels[rows], np.full(len(split.labels[rows]), task))


def _batch_gradient_squared(ctx, samples: int) -> dict[str, torch.Tensor]:
    """(d CE(batch) / d theta)^2 of the same N samples as one batch: what a batch-mean Fisher would be."""
    model = ctx.model.eval()
    sampler = StageSampler(ctx.tasks, ctx.stage.train_tasks, batch_size=samples, seed=ctx.seed, stage_index=ctx.stage_index)
    model.zero_grad()
    ctx.task_loss(ctx.make_batch(*next(iter(sampler.batches(1))))).backward()
    squared = {n: p.grad.detach() ** 2 for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.train()
    return squared


@torch.no_grad()
def shift_parameters(model: torch.nn.Module, delta: float) -> None:
    for p in model.parameters():
        p.add_(delta)


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- formulas on toy tensors

def test_distillation_formulas_on_toy_logits():
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    student = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    t = 2.0
    p, log_p, log_q = F.softmax(teacher / t, 1), F.log_softmax(teacher / t, 1), F.log_softmax(student / t, 1)
    kl = (p * (log_p - log_q)).sum(1).mean() * t * t
    ce = -(p * log_q).sum(1).mean() * t * t
    assert distill_kl(teacher, student, t).item() == pytest.approx(kl.item(), rel=1e-6)
    assert distill_ce(teacher, student, t).item() == pytest.approx(ce.item(), rel=1e-6)
    assert distill_kl(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-6)


def test_l2_penalty_and_interpolation_on_a_toy_module():
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.fill_(3.0)
    anchor = {"weight": torch.tensor([[0.0, 0.0]]), "bias": torch.tensor([1.0])}
    assert l2_penalty(layer, anchor).item() == pytest.approx(1 + 4 + 4)
    weights = {"weight": torch.tensor([[2.0, 0.5]]), "bias": torch.tensor([0.0])}
    assert l2_penalty(layer, anchor, weights).item() == pytest.approx(2 * 1 + 0.5 * 4)
    interpolate_(layer, anchor, 0.25)
    torch.testing.assert_close(layer.weight.data, torch.tensor([[0.25, 0.5]]))
    torch.testing.assert_close(layer.bias.data, torch.tensor([1.5]))


@pytest.mark.parametrize("size,world", [(101, 2), (5, 4), (3, 8), (0, 2)])
def test_shard_capacities_add_up_to_the_global_size(size, world):
    caps = [shard_capacity(size, r, world) for r in range(world)]
    assert sum(caps) == size and max(caps) - min(caps) <= 1 and caps == sorted(caps, reverse=True)


# --------------------------------------------------------------------------- each strategy's loss

def test_l2_loss_adds_lam_times_squared_distance_to_task_start(bundle, tasks):
    ctx = make_ctx(bundle, tasks)
    strategy = build_strategy("l2", {"lam": 0.5})
    strategy.before_stage(ctx)
    shift_parameters(ctx.model, 0.01)
    batch = task_batch(ctx, 0)
    terms = strategy.loss(ctx, batch)
    expected_reg = n_parameters(ctx.model) * 0.01 ** 2
    assert terms["l2"].item() == pytest.approx(expected_reg, rel=1e-3)
    assert terms["loss"].item() == pytest.approx(ctx.task_loss(batch).item() + 0.5 * expected_reg, rel=1e-4)


def _hand_fisher(ctx, samples: int) -> dict[str, torch.Tensor]:
    """(1/N) sum_n (d CE(x_n) / d theta)^2 over the first global batch of N samples, one backward each."""
    model = ctx.model.eval()
    sampler = StageSampler(ctx.tasks, ctx.stage.train_tasks, batch_size=samples, seed=ctx.seed, stage_index=ctx.stage_index)
    images, labels, task_ids = next(iter(sampler.batches(1)))
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(samples):
        model.zero_grad()
        ctx.task_loss(ctx.make_batch(images[i : i + 1], labels[i : i + 1], task_ids[i : i + 1])).backward()
        for n, p in model.named_parameters():
            fisher[n] += p.grad ** 2 / samples
    model.zero_grad(set_to_none=True)
    model.train()
    return fisher


def test_ewc_fisher_is_the_mean_squared_per_sample_gradient_and_weights_the_penalty(bundle, tasks):
    ctx = make_ctx(bundle, tasks)
    strategy = build_strategy("ewc", {"lam": 2.0, "fisher_samples": 4})
    strategy.setup(ctx)
    strategy.after_stage(ctx)
    expected = _hand_fisher(ctx, 4)
    batch_mean = _batch_gradient_squared(ctx, 4)
    gap = sum((strategy.fishers[0][n] - batch_mean[n]).sum() for n in batch_mean)
    assert gap > 1e-3 * sum(f.sum() for f in batch_mean.values()), "not the square of the batch-mean gradient"
    for name, value in strategy.fishers[0].items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-10)
    shift_parameters(ctx.model, 0.01)
    batch = task_batch(ctx, 1)
    terms = strategy.loss(ctx, batch)
    penalty = sum((f * 0.01 ** 2).sum() for f in expected.values())
    assert terms["ewc"].item() == pytest.approx(penalty.item(), rel=1e-3)
    assert terms["loss"].item() == pytest.approx(ctx.task_loss(batch).item() + 2.0 / 2 * penalty.item(), rel=1e-4)


@pytest.mark.parametrize("online", [True, False])
def test_ewc_online_decays_and_accumulates_one_fisher(bundle, tasks, online):
    ctx = make_ctx(bundle, tasks)
    strategy = build_strategy("ewc", {"fisher_samples": 2, "online": online, "gamma": 0.5})
    strategy.setup(ctx)
    strategy.after_stage(ctx)
    first = {n: f.clone() for n, f in strategy.fishers[0].items()}
    ctx.stage_index = 1
    second = estimate_fisher(ctx, 2)
    strategy.after_stage(ctx)
    assert len(strategy.fishers) == (1 if online else 2)
    name = next(iter(first))
    expected = 0.5 * first[name] + second[name] if online else second[name]
    torch.testing.assert_close(strategy.fishers[-1][name], expected)


def test_lwf_mtil_distils_the_current_prompts_against_the_previous_model(bundle, tasks):
    """ZSCL's lwf.sh: reference images = the current batch, texts = the current task's prompts through the
    previous model's text tower, image and text (transposed) terms; the first task's teacher is the start."""
    ctx = make_ctx(bundle, tasks, stage_index=1)
    strategy = build_strategy("lwf", {"lam": 3.0})
    assert strategy.params.variant == "mtil"
    teacher = copy.deepcopy(ctx.model).eval()
    strategy.before_stage(ctx)
    shift_parameters(ctx.model, 0.02)
    batch = task_batch(ctx, 1)
    terms = strategy.loss(ctx, batch)
    with torch.no_grad():
        g = ctx.class_embeddings(1, teacher)
        s = teacher.logit_scale.exp()
        z_prev = s * teacher.encode_image(batch.images, normalize=True) @ g.t()
        z = s * ctx.model.encode_image(batch.images, normalize=True) @ g.t()
    def soft_ce(t, x):
        return -(F.softmax(t / 2, 1) * F.log_softmax(x / 2, 1)).sum(1).mean() * 4
    expected = soft_ce(z_prev, z) + soft_ce(z_prev.t(), z.t())
    assert expected.item() > 1e-4, "the shifted model should disagree with its teacher"
    assert terms["distill"].item() == pytest.approx(expected.item(), rel=1e-3)
    assert terms["loss"].item() == pytest.approx(ctx.task_loss(batch).item() + 3.0 * expected.item(), rel=1e-4)
    first = build_strategy("lwf")
    first.before_stage(make_ctx(bundle, tasks))
    assert first.teacher is not None  # the zero-shot model teaches the first task too


def test_lwf_old_heads_distils_earlier_heads_from_the_previous_model(bundle, tasks):
    ctx = make_ctx(bundle, tasks, stage_index=1)
    strategy = build_strategy("lwf", {"lam": 3.0, "temperature": 2.0, "variant": "old_heads"})
    teacher = copy.deepcopy(ctx.model).eval()
    strategy.before_stage(ctx)
    assert strategy.old_tasks == [0] and not any(p.requires_grad for p in strategy.teacher.parameters())
    shift_parameters(ctx.model, 0.02)
    batch = task_batch(ctx, 1)
    terms = strategy.loss(ctx, batch)
    with torch.no_grad():
        old = clip_logits(teacher.encode_image(batch.images, normalize=True), ctx.class_embeddings(0, teacher),
                          teacher.logit_scale.exp())
        new = clip_logits(ctx.model.encode_image(batch.images, normalize=True), ctx.class_embeddings(0),
                          ctx.model.logit_scale.exp())
    p = F.softmax(old / 2, 1)
    kd = (p * (F.log_softmax(old / 2, 1) - F.log_softmax(new / 2, 1))).sum(1).mean() * 4
    assert kd.item() > 1e-4, "the shifted model should disagree with its teacher"
    assert terms["distill"].item() == pytest.approx(kd.item(), rel=1e-3)
    assert terms["loss"].item() == pytest.approx(ctx.task_loss(batch).item() + 3.0 * kd.item(), rel=1e-4)
    first = build_strategy("lwf", {"variant": "old_heads"})
    first.before_stage(make_ctx(bundle, tasks))
    assert first.teacher is None and set(first.loss(ctx, batch)) == {"loss", "ce"}


def test_wiseft_interpolates_every_floating_tensor_after_the_task(bundle, tasks):
    ctx = make_ctx(bundle, tasks)
    strategy = build_strategy("wiseft", {"weight": 0.25})
    before = {n: t.clone() for n, t in ctx.model.state_dict().items()}
    strategy.before_stage(ctx)
    with torch.no_grad():
        for t in ctx.model.state_dict().values():
            if t.is_floating_point():
                t.add_(1.0)
    strategy.after_stage(ctx)
    for name, t in ctx.model.state_dict().items():
        expected = before[name] + 0.25 if t.is_floating_point() else before[name]
        torch.testing.assert_close(t, expected)


def test_zscl_defaults_are_the_authors(bundle):
    params = build_strategy("zscl", {"reference": TINY_REFERENCE}).params
    assert (params.l2, params.temperature, params.ensemble_period, params.text_features) == (1.0, 2.0, 0.1, "teacher_captions")


def test_zscl_distils_against_the_teachers_caption_features_by_default(bundle, tasks):
    """The authors' finetune.py: Z = s f(x) G^T with G every distinct caption through the *teacher's* text tower."""
    ctx = make_ctx(bundle, tasks)
    start = copy.deepcopy(ctx.model).eval()
    strategy = build_strategy("zscl", {"reference": TINY_REFERENCE, "reference_batch_size": 5, "image_weight": 1.0,
                                       "text_weight": 0.5, "l2": 0.0, "ensemble_period": 0})
    strategy.setup(ctx)
    shift_parameters(ctx.model, 0.02)  # the student's text tower moves; the caption features must not
    strategy.before_stage(ctx)
    terms = strategy.loss(ctx, task_batch(ctx, 0))
    captions = sorted(set(strategy.reference.captions))
    images = ctx.preprocess(strategy.reference.images)
    with torch.no_grad():
        g = start.encode_text(bundle.tokenizer(captions), normalize=True)
        scale = start.logit_scale.exp()
        z_ref = scale * start.encode_image(images, normalize=True) @ g.t()
        z = scale * ctx.model.encode_image(images, normalize=True) @ g.t()
    assert z.shape == (5, len(captions))
    def soft_ce(t, s):
        return -(F.softmax(t / 2, 1) * F.log_softmax(s / 2, 1)).sum(1).mean() * 4
    assert terms["distill_image"].item() == pytest.approx(soft_ce(z_ref, z).item(), rel=1e-3)
    assert terms["distill_text"].item() == pytest.approx(soft_ce(z_ref.t(), z.t()).item(), rel=1e-3)
    text_params = [p for n, p in ctx.model.named_parameters() if not n.startswith("visual.") and "logit_scale" not in n]
    grads = torch.autograd.grad(terms["distill_image"] + terms["distill_text"], text_params, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)  # the distillation does not reach the student's text tower


def test_zscl_student_pairs_distils_both_directions_against_the_starting_model(bundle, tasks):
    ctx = make_ctx(bundle, tasks)
    start = copy.deepcopy(ctx.model).eval()
    strategy = build_strategy("zscl", {"reference": TINY_REFERENCE, "reference_batch_size": 5, "image_weight": 1.0,
                                       "text_weight": 0.5, "l2": 0.1, "ensemble_period": 0,
                                       "text_features": "student_pairs"})
    strategy.setup(ctx)
    assert len(strategy.reference) == 5
    shift_parameters(ctx.model, 0.01)  # as if earlier tasks had been trained
    strategy.before_stage(ctx)
    shift_parameters(ctx.model, 0.02)
    batch = task_batch(ctx, 0)
    terms = strategy.loss(ctx, batch)
    images = ctx.preprocess(strategy.reference.images)
    tokens = bundle.tokenizer(list(strategy.reference.captions))
    with torch.no_grad():
        def logits(model):
            return model.logit_scale.exp() * model.encode_image(images, normalize=True) @ model.encode_text(tokens, normalize=True).t()
        z_ref, z = logits(start), logits(ctx.model)
    def soft_ce(t, s):
        return -(F.softmax(t / 2, 1) * F.log_softmax(s / 2, 1)).sum(1).mean() * 4
    image_term, text_term = soft_ce(z_ref, z), soft_ce(z_ref.t(), z.t())
    reg = n_parameters(ctx.model) * 0.02 ** 2
    assert terms["distill_image"].item() == pytest.approx(image_term.item(), rel=1e-3)
    assert terms["distill_text"].item() == pytest.approx(text_term.item(), rel=1e-3)
    assert terms["l2"].item() == pytest.approx(reg, rel=1e-3)
    expected = ctx.task_loss(batch).item() + image_term.item() + 0.5 * text_term.item() + 0.1 * reg
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-4)


def test_zscl_keeps_the_running_average_of_snapshots(bundle, tasks):
    ctx = make_ctx(bundle, tasks)
    strategy = build_strategy("zscl", {"reference": TINY_REFERENCE, "ensemble_period": 0.4})
    strategy.setup(ctx)
    start = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    ctx.total_steps = 5  # period 0.4 of 5 steps: a snapshot every 2 steps
    strategy.before_stage(ctx)
    for step, delta in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0)]:
        shift_parameters(ctx.model, delta)
        ctx.step = step
        strategy.after_step(ctx)
    strategy.after_stage(ctx)
    # snapshots: start, step 2 (+3), step 4 (+15), last step 5 (+31) -> mean shift 49 / 4
    name, p = next(iter(ctx.model.named_parameters()))
    torch.testing.assert_close(p.detach(), start[name] + 49 / 4)


def test_rehearsal_loss_is_the_mean_ce_over_current_and_replayed_samples(bundle, tasks):
    ctx = make_ctx(bundle, tasks)
    strategy = build_strategy("rehearsal", {"buffer_size": 6, "replay_fraction": 0.5})
    strategy.setup(ctx)
    strategy.after_stage(ctx)
    assert len(strategy.buffer) == 6 and set(strategy.buffer.tasks) == {0}
    ctx.stage_index = 1
    batch = task_batch(ctx, 1, n=6)
    terms = strategy.loss(ctx, batch)  # |R| = 6 = the whole buffer
    replay = strategy.buffer.sample(ctx, 6, np.random.default_rng(0))
    expected = (6 * ctx.task_loss(batch).item() + 6 * ctx.task_loss(replay).item()) / 12
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-4)
    assert len(concat([batch, replay])) == 12


def test_rehearsal_buffer_is_compact_uint8():
    buffer = ReplayBuffer(capacity=4, policy="reservoir")
    rng = np.random.default_rng(0)
    for i in range(10):
        buffer.offer(np.full((8, 8, 1), i, dtype=np.uint8), label=i % 2, task=0, index=i, rng=rng)
    assert len(buffer) == 4 and buffer.seen == 10
    assert all(image.dtype == np.uint8 for image in buffer.images)
    assert buffer.nbytes == 4 * 64 + 4 * 24


def test_reservoir_is_a_uniform_sample_of_the_stream():
    rng = np.random.default_rng(0)
    kept_early = []
    for _ in range(200):
        buffer = ReplayBuffer(capacity=10, policy="reservoir")
        for i in range(100):
            buffer.offer(np.zeros((1, 1, 1), np.uint8), 0, 0, i, rng)
        kept_early.append(sum(i < 50 for i in buffer.ids))
    assert np.mean(kept_early) == pytest.approx(5.0, abs=0.5)  # half the stream, half the buffer


@pytest.mark.parametrize("policy,key", [("class_balanced", lambda t, c: (t, c)), ("task_balanced", lambda t, c: t)])
def test_balanced_buffers_end_up_balanced(policy, key):
    buffer = ReplayBuffer(capacity=30, policy=policy)
    rng = np.random.default_rng(0)
    for task in range(3):
        for i in rng.permutation(100):
            buffer.offer(np.zeros((1, 1, 1), np.uint8), int(i % 5), task, int(i), rng)
    counts = np.unique([str(key(t, c)) for t, c in zip(buffer.tasks, buffer.labels)], return_counts=True)[1]
    assert len(buffer) == 30 and counts.min() == counts.max()


def test_rehearsal_shards_are_disjoint_and_sized_globally(bundle, tasks):
    shards = []
    for rank in range(2):
        ctx = make_ctx(bundle, tasks, rank=rank, world_size=2)
        strategy = build_strategy("rehearsal", {"buffer_size": 13, "policy": "class_balanced"})
        strategy.setup(ctx)
        for stage in range(2):
            ctx.stage_index = stage
            strategy.after_stage(ctx)
        shards.append(strategy.buffer)
    assert [len(s) for s in shards] == [7, 6]
    ids = [{(t, i) for t, i in zip(s.tasks, s.ids)} for s in shards]
    assert not ids[0] & ids[1] and all(i % 2 == r for r, shard in enumerate(ids) for _, i in shard)
    assert set(shards[0].tasks) == {0, 1}


def test_specialist_evaluates_each_task_with_its_own_model(bundle, tasks):
    ctx = make_ctx(bundle, tasks)
    strategy = build_strategy("specialist")
    strategy.setup(ctx)
    start = next(ctx.model.parameters()).detach().clone()
    for stage, delta in [(0, 1.0), (1, 2.0)]:
        ctx.stage_index = stage
        strategy.before_stage(ctx)
        torch.testing.assert_close(next(ctx.model.parameters()).detach(), start)
        shift_parameters(ctx.model, delta)
        strategy.after_stage(ctx)
    for task, expected in [(0, start + 1), (1, start + 2), (2, start)]:
        with strategy.eval_model(ctx, task) as model:
            torch.testing.assert_close(next(model.parameters()).detach(), expected)
    torch.testing.assert_close(next(ctx.model.parameters()).detach(), start + 2)


def test_joint_trains_one_stage_on_every_task(tasks):
    stages = build_strategy("joint").stages(tasks)
    assert [(s.name, s.train_tasks) for s in stages] == [("joint", (0, 1, 2))]


# --------------------------------------------------------------------------- parameters and reference sets

def test_params_are_validated_and_extra_fields_forbidden():
    with pytest.raises(ValidationError):
        build_strategy("rehearsal", {"buffer": 10})
    with pytest.raises(ValidationError):
        build_strategy("rehearsal", {"policy": "fifo"})
    with pytest.raises(ConfigError, match="strategy.reference"):
        validate_experiment({"name": "x", "strategy": {"name": "zscl", "reference": {"name": "synthmed", "domain": ["ct"]}}})
    with pytest.raises(ConfigError, match="reference source"):
        validate_experiment({"name": "x", "strategy": {"name": "zscl", "reference": {"name": "imagenet"}}})


def test_parquet_reference_reads_image_bytes_and_captions(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(value: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(np.full((20, 10), value, dtype=np.uint8)).save(out, format="PNG")
        return out.getvalue()

    table = pa.table({"id": ["a", "b", "c"], "image": [png(0), png(128), png(255)],
                      "caption": ["one", "two", "three"], "modality": ["xray", "ct", "mr"]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    reference = ReferenceConfig(name="parquet", path=str(tmp_path), image_size=16, limit=2).load()
    assert reference.images.shape == (2, 16, 16, 3) and reference.images.dtype == np.uint8
    assert reference.captions == ("one", "two") and reference.modalities == ("xray", "ct")
    assert reference.images[1].mean() == pytest.approx(128, abs=1)
    published = tmp_path / "corpus"  # a published corpus (medcl.publish): the CURRENT version is read
    (published / "v-old").mkdir(parents=True)
    (published / "v-new").mkdir()
    pq.write_table(table.slice(0, 1), published / "v-old" / "part-0.parquet")
    pq.write_table(table.slice(2, 1), published / "v-new" / "part-0.parquet")
    (published / "CURRENT").write_text("v-new\n")
    assert ReferenceConfig(name="parquet", path=str(published), image_size=16).load().captions == ("three",)


def test_synthmed_reference_is_deterministic_rgb():
    first = ReferenceConfig(**TINY_REFERENCE).load()
    again = ReferenceConfig(**TINY_REFERENCE).load()
    assert first.images.shape == (5, 32, 32, 3) and first.captions == again.captions
    np.testing.assert_array_equal(first.images, again.images)
    assert all("CT" in c or "ct" in c.lower() for c in first.captions)


# --------------------------------------------------------------------------- checkpoint round trip

def _train_stage(strategy, ctx, steps: int = 2) -> list[float]:
    """What the engine does with one stage (SGD instead of AdamW); returns the loss of every step."""
    ctx.train_mode()  # as the engine does: teachers copied in before_stage see the training modes
    strategy.before_stage(ctx)
    optimizer = torch.optim.SGD(list(strategy.trainable_parameters(ctx)), lr=0.05)
    ctx.train_mode()
    torch.manual_seed(ctx.stage_index)
    losses = []
    for step in range(steps):
        ctx.step = step
        optimizer.zero_grad()
        loss = strategy.loss(ctx, task_batch(ctx, ctx.task_index, offset=4 * step))["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        ctx.step = step + 1
        strategy.after_step(ctx)
    strategy.after_stage(ctx)
    return losses


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_state_survives_a_checkpoint_round_trip(name, bundle, tasks, tmp_path):
    params = TEST_PARAMS.get(name)
    original, ctx = build_strategy(name, params), make_ctx(bundle, tasks)
    original.setup(ctx)
    _train_stage(original, ctx)
    torch.save(original.state_dict(), tmp_path / "strategy.pt")
    # A restarted worker: the starting model from the seed, setup, then the checkpoint's weights and state.
    restored, ctx2 = build_strategy(name, params), make_ctx(bundle, tasks)
    restored.setup(ctx2)
    ctx2.model.load_state_dict(ctx.model.state_dict())
    restored.load_state_dict(torch.load(tmp_path / "strategy.pt", weights_only=True))
    if len(original.stages(tasks)) > 1:  # train the next stage on both: same losses step by step
        ctx.stage_index = ctx2.stage_index = 1
        assert _train_stage(restored, ctx2) == pytest.approx(_train_stage(original, ctx), rel=1e-5)
    for a, b in zip(eval_logits(original, ctx), eval_logits(restored, ctx2)):
        torch.testing.assert_close(a, b)
