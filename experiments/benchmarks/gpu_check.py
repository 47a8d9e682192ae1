"""One prepared check of every CUDA path of medcl, sized for one short command on one GPU (issue 33, docs/gpu.md).

    python experiments/benchmarks/gpu_check.py --out gpu_check.json            # one GPU: ViT-B/16, ~4-5 min on an H100
    python experiments/benchmarks/gpu_check.py --dry-run --out gpu_check.json  # CPU, tiny model: CI (tests/unit/test_gpu_check.py)
    python experiments/benchmarks/gpu_check.py --carry-requirements            # the wheels a bare GPU machine lacks (make gpu-check)

It imports only what travels to a bare GPU machine (torch, timm, peft, pyarrow, transformers and
safetensors there; medcl, open_clip and small pure-Python packages carried as wheels): no Ray, Optuna
or FAISS (FAISS only in its own section, when a wheel was carried). medcl's worker loop
(:mod:`medcl.engine.loop`) needs Ray, so the steps are run here as it runs them (``_step`` mirrors
``loop._run_steps``: autocast around ``strategy.loss``, the grad scaler for fp16, ``optimizer_step``);
the mid-task checkpoint is medcl's own (:func:`medcl.engine.midtask.midtask_payload`, written with
:func:`~medcl.engine.checkpoint.write_checkpoint`, loaded by :meth:`MidTaskCheckpoints.resume`).

Sections of the JSON (each guarded: an exception is recorded as ``{"ok": false, "error": ...}`` and
the next section runs; ``strategies`` and ``embed`` have time budgets (170 s, 60 s on the GPU), past
which their remaining rows are marked skipped; ``resume`` (~5 short runs) and ``faiss`` run whole; the
JSON file is rewritten after every section, so a run killed by its timeout leaves what it did):

``env``         device name, torch/CUDA versions, the packages the script imported.
``strategies``  one row per registered strategy (bf16 autocast; ``finetune`` also fp16 with the grad
                scaler): ViT-B/16 CLIP (random init, 224 px), two stages of ``steps`` optimiser
                steps at batch 64 on synthmed; ``losses`` per stage and ``finite``; ``fp32``: the
                loss of the first batch of stage 1 (``compare_batch`` samples, before any step, the
                model in eval mode so that dropout and router noise draw nothing) on the device in
                fp32 (TF32 off) against the same on CPU: ``equal`` when ``|device - cpu| <= 1e-3 +
                1e-3 * |cpu|``; ``autocast`` the same batch under the row's autocast (reported, not
                judged); ``images_per_s`` of the training steps (each stage's first step excluded) and
                ``peak_memory_mib`` (``torch.cuda.max_memory_allocated`` over the row's training).
``resume``      ``moe_adapters`` (its experts' dropout and router noise draw from the device's
                generator), ``resume_steps`` steps uninterrupted, twice (``noise_floor``: the largest
                loss difference between the two); then half of them, a mid-task checkpoint, every
                object rebuilt from scratch with the generators reseeded, ``MidTaskCheckpoints.resume``
                and the rest: ``equal`` when every later loss is within ``max(1e-6 * (1 + |loss|),
                4 * noise_floor)`` of the uninterrupted run. ``control``: the same resume with the
                device generator reseeded after it (as if its state had not been saved) must differ
                (``control_differs``), or the check proved nothing.
``embed``       the corpus embedder's image path (:class:`medcl.corpus.embed.Embedder`: uint8 pixels
                in, normalised features out, the medcl path) and the bare image tower on device-resident
                input, images/s at batch 256 and 1024 in fp32 and bf16, beside the published reference.
``faiss``       an exact inner-product index on the GPU against the CPU's, if a FAISS wheel was
                carried; otherwise a row saying it was not.

``gpu_seconds`` is the script's wall time from its first line to the last section (the device is
held all along); ``dry_run`` runs the same code on CPU with the tiny ViT, 2 steps, small batches.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

_STARTED = time.perf_counter()  # gpu_seconds counts the imports too: the device is held from the start

# Distributions a bare GPU machine lacks (docs/gpu.md): carried as wheels by `make gpu-check`, pinned to
# the versions installed here. typing_extensions is there, but pydantic needs a recent one.
CARRY = ("open_clip_torch", "ftfy", "wcwidth", "pydantic", "pydantic_core", "annotated_types",
         "typing_inspection", "typing_extensions", "bm25s")
CARRY_LIMIT_BYTES = 64 << 20  # the working tree plus everything carried, per call
FORBIDDEN = ("ray", "optuna", "faiss")  # not on the GPU machine: nothing before the faiss section may load them
PUBLISHED = {"model": "CLIP ViT-B/16 image tower (timm vit_base_patch16_clip_224)", "images_per_s": 3356,
             "gpu": "RTX 4090", "precision": "AMP", "batch": 1024,
             "source": "timm's benchmark CSVs (inference, AMP), as quoted in issue 33; not re-measured here"}
FP32_RTOL = FP32_ATOL = 1e-3  # device vs CPU loss in fp32 (different kernels and summation orders)
RESUME_RTOL = 1e-6
AUTOCAST = {"bf16": "bfloat16", "fp16": "float16", "fp32": None}


@dataclass(frozen=True)
class Plan:
    """What one run checks and at what size."""

    dry_run: bool
    model: str
    image_size: int
    batch: int  # training batch
    compare_batch: int  # samples of the fp32 device-vs-CPU loss
    steps: int  # optimiser steps per stage (two stages)
    lr: float
    resume_steps: int  # uninterrupted steps of the resume check; the checkpoint after half of them
    resume_lr: float  # large enough that the experts' outputs (zero at init) matter by the checkpoint
    embed_batches: tuple[int, ...]
    embed_rounds: int  # timed batches per figure, after one warm-up batch
    faiss_rows: int
    threads: int | None = None  # torch CPU threads (None: torch's default)
    budgets: dict = field(default_factory=dict)  # section -> seconds, past which its remaining rows are skipped


GPU = Plan(dry_run=False, model="ViT-B-16", image_size=224, batch=64, compare_batch=8, steps=3, lr=1e-5,
           resume_steps=6, resume_lr=1e-3, embed_batches=(256, 1024), embed_rounds=3, faiss_rows=100_000, threads=None,
           budgets={"strategies": 170, "embed": 60})
# One thread: on a busy 2-core CI machine two threads contend and run this tiny model ~8x slower.
DRY = Plan(dry_run=True, model="medcl-tiny-vit-p4", image_size=16, batch=8, compare_batch=4, steps=2, lr=1e-5,
           resume_steps=4, resume_lr=1e-2, embed_batches=(8, 16), embed_rounds=1, faiss_rows=2_000, threads=1,
           budgets={"strategies": 600, "embed": 120})
# Parameters that keep a strategy's own work (Fisher, exemplars, reference sets) small; others use their defaults.
CHECK_PARAMS = {"zscl": {"reference": {"name": "synthmed", "per_class": 2}, "ensemble_period": 0.5, "l2": 1.0},
                "rehearsal": {"buffer_size": 32}, "icarl": {"buffer_size": 32}, "ewc": {"fisher_samples": 8},
                "primed": {"builtin_per_class": 2}, "primed_bm25": {"builtin_per_class": 2},
                "primed_uniform": {"builtin_per_class": 2}}
FP16_ROWS = ("finetune",)  # strategies also run in fp16 with the grad scaler


# ---------------------------------------------------------------- the run: sections, budgets, JSON

class Report:
    """The JSON being built; rewritten to ``out`` after every section."""

    def __init__(self, plan: Plan, out: Path | None):
        self.plan, self.out, self.started = plan, out, _STARTED
        self.data = {"script": "experiments/benchmarks/gpu_check.py", "dry_run": plan.dry_run,
                     "plan": {k: v for k, v in vars(plan).items()}, "reference": PUBLISHED,
                     "tolerances": {"fp32_device_vs_cpu": f"|device - cpu| <= {FP32_ATOL} + {FP32_RTOL} * |cpu|",
                                    "resume": f"|resumed - uninterrupted| <= max({RESUME_RTOL} * (1 + |loss|), "
                                              "4 * noise_floor)"},
                     "sections": {}}

    def section(self, name: str, run, *args) -> dict:
        started = time.perf_counter()
        deadline = started + self.plan.budgets.get(name, math.inf)
        try:
            result = {"ok": True, **run(*args, deadline=deadline)}
            result["ok"] = _all_ok(result)
        except Exception as exc:  # noqa: BLE001 - recorded, and the next section runs
            result = {"ok": False, "error": _error_text(exc)}
        result["seconds"] = round(time.perf_counter() - started, 2)
        self.data["sections"][name] = result
        _release_memory()
        self.write()
        return result

    def write(self) -> None:
        self.data["gpu_seconds"] = round(time.perf_counter() - self.started, 1)
        self.data["ok"] = all(s.get("ok") for s in self.data["sections"].values())
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            partial = self.out.with_suffix(".partial")
            partial.write_text(json.dumps(self.data, indent=1, default=str))
            os.replace(partial, self.out)


def _all_ok(result: dict) -> bool:
    rows = result.get("rows", [])
    return all(row.get("ok", True) for row in rows) and result.get("ok", True)


def _error_text(exc: BaseException) -> str:
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"{type(exc).__name__}: {exc}\n" + "".join(frames[-3:])[-1500:]


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _no_tf32():
    """Full fp32 for matmuls and convolutions (cuDNN convolutions use TF32 by default)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------- shared fixtures: model, tasks, contexts

@dataclass
class Fixture:
    """The base model (CPU, seed 0), its bundle, the synthmed tasks and the device."""

    bundle: object
    tasks: list
    device: object
    plan: Plan


def build_fixture(plan: Plan):
    import torch

    from medcl.data.synthmed import SynthMed
    from medcl.models import create_model

    device = torch.device("cpu" if plan.dry_run else "cuda")
    torch.manual_seed(0)
    bundle = create_model(plan.model, pretrained=None, image_size=plan.image_size)
    tasks = SynthMed().build({"num_tasks": 2, "train_per_class": 16, "val_per_class": 1, "test_per_class": 1}, seed=0)
    return Fixture(bundle=bundle, tasks=tasks, device=device, plan=plan)


def make_ctx(fx: Fixture, strategy, device, *, precision: str = "bf16", lr: float | None = None, prepared=None):
    """A worker's context on ``device`` with a fresh copy of the seed-0 model (as a restarted worker builds it)."""
    from medcl.config import TrainSection
    from medcl.engine.context import TrainContext
    from medcl.engine.preprocess import to_model_input

    bundle = fx.bundle
    train = TrainSection(batch_size=fx.plan.batch, steps_per_task=fx.plan.steps, precision=precision,
                         use_gpu=device.type == "cuda" or precision == "fp16", lr=lr or fx.plan.lr)
    return TrainContext(model=copy.deepcopy(bundle.model).to(device), tokenizer=bundle.tokenizer, tasks=list(fx.tasks),
                        stages=strategy.stages(fx.tasks), device=device, train=train, prepared=prepared,
                        preprocess=lambda images: to_model_input(images, bundle.image_size, bundle.mean, bundle.std, device))


def start_stage(ctx, strategy, stage_index: int, *, seed: int = 0):
    """What ``loop._train_stage`` does before the first step; the sampler and (params, optimizer, scheduler, scaler)."""
    import torch

    from medcl.engine.optim import build_optimizer
    from medcl.engine.sampling import StageSampler

    ctx.stage_index = stage_index
    sampler = StageSampler(ctx.tasks, ctx.stage.train_tasks, batch_size=ctx.train.batch_size, seed=seed,
                           stage_index=stage_index, rank=ctx.rank, world_size=ctx.world_size)
    total = sampler.steps_for(ctx.train.steps_per_task * len(ctx.stage.train_tasks), None)
    torch.manual_seed(seed * 1_000_003 + stage_index * 1_009 + ctx.rank)
    ctx.step, ctx.total_steps = 0, total
    ctx.train_mode()
    strategy.before_stage(ctx)
    params = list(strategy.trainable_parameters(ctx))
    optimizer, scheduler = build_optimizer(params, ctx.train, total)
    scaler = torch.amp.GradScaler(ctx.device.type) if ctx.train.precision == "fp16" else None
    ctx.train_mode()
    return sampler, (params, optimizer, scheduler, scaler)


def step(ctx, strategy, images, labels, task_ids, optimisation) -> dict[str, float]:
    """One optimiser step as ``loop._run_steps`` takes it (one worker: no gradient all-reduce)."""
    import torch

    from medcl.engine.optim import optimizer_step

    params, optimizer, scheduler, scaler = optimisation
    batch = ctx.make_batch(images, labels, task_ids)
    dtype = getattr(torch, AUTOCAST[ctx.train.precision] or "float32")
    with torch.autocast(ctx.device.type, dtype=dtype, enabled=AUTOCAST[ctx.train.precision] is not None):
        terms = strategy.loss(ctx, batch)
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(terms["loss"]) if scaler else terms["loss"]).backward()
    optimizer_step(optimizer, scheduler, params, ctx.train.grad_clip, scaler)
    ctx.step += 1
    strategy.after_step(ctx)
    return {name: float(value.detach()) for name, value in terms.items()}


# ---------------------------------------------------------------- section: strategies

def check_strategies(fx: Fixture, *, deadline: float) -> dict:
    from medcl.strategies import STRATEGIES

    rows = []
    # the plain step and the grad scaler first: if the budget runs out, the rows skipped are the methods'
    jobs = [(name, "bf16") for name in FP16_ROWS] + [(name, "fp16") for name in FP16_ROWS]
    jobs += [(name, "bf16") for name in STRATEGIES.names() if name not in FP16_ROWS]
    for name, precision in jobs:
        if time.perf_counter() > deadline:
            rows.append({"strategy": name, "precision": precision, "ok": False, "skipped": "section budget spent"})
            continue
        started = time.perf_counter()
        try:
            row = strategy_row(fx, name, precision)
        except Exception as exc:  # noqa: BLE001 - one strategy's failure is its row's
            row = {"strategy": name, "precision": precision, "ok": False, "error": _error_text(exc)}
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        _release_memory()
    return {"rows": rows, "train_step": _train_step_summary(rows)}


def strategy_row(fx: Fixture, name: str, precision: str) -> dict:
    import torch

    from medcl.strategies import build_strategy

    strategy = build_strategy(name, CHECK_PARAMS.get(name))
    ctx = make_ctx(fx, strategy, fx.device, precision=precision)
    strategy.setup(ctx)
    sampler, optimisation = start_stage(ctx, strategy, 0)
    fp32 = compare_fp32(fx, ctx, strategy, name)
    if fx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(fx.device)
    losses, timed_s, timed_images = [], 0.0, 0
    for stage_index in range(min(2, len(ctx.stages))):
        if stage_index:
            strategy.after_stage(ctx)
            sampler, optimisation = start_stage(ctx, strategy, stage_index)
        stage_losses = []
        for n, (images, labels, task_ids) in enumerate(sampler.batches(ctx.total_steps)):
            _sync(fx.device)
            began = time.perf_counter()
            stage_losses.append(step(ctx, strategy, images, labels, task_ids, optimisation)["loss"])
            _sync(fx.device)
            if n:  # the first step of a stage builds kernels and optimiser state
                timed_s, timed_images = timed_s + time.perf_counter() - began, timed_images + len(labels)
        losses.append(stage_losses)
    finite = all(math.isfinite(v) for stage in losses for v in stage)
    peak = torch.cuda.max_memory_allocated(fx.device) / 2**20 if fx.device.type == "cuda" else None
    return {"strategy": name, "precision": precision, "ok": finite and fp32["equal"], "losses": losses,
            "finite": finite, "fp32": fp32, "images_per_s": round(timed_images / timed_s, 1) if timed_s else None,
            "peak_memory_mib": round(peak, 1) if peak is not None else None,
            "scaler": precision == "fp16", "batch": fx.plan.batch}


def compare_fp32(fx: Fixture, ctx, strategy, name: str) -> dict:
    """The first batch of stage 1 through ``strategy.loss`` on the device (fp32, then the row's
    autocast) and through a fresh CPU copy of everything in fp32; the model in eval mode."""
    from medcl.strategies import build_strategy

    device_fp32, device_autocast = _first_loss(ctx, strategy, fx.plan.compare_batch, autocast=True)
    # PRIMED plans its reference sets once on the driver and every worker reads the plan (ctx.prepared):
    # the CPU copy reads the device's plan, as a second worker would.
    cpu_strategy = build_strategy(name, CHECK_PARAMS.get(name))
    cpu_ctx = make_ctx(fx, cpu_strategy, _cpu(), precision="fp32", prepared=getattr(strategy, "plan_dir", None))
    cpu_strategy.setup(cpu_ctx)
    start_stage(cpu_ctx, cpu_strategy, 0)
    cpu_fp32, _ = _first_loss(cpu_ctx, cpu_strategy, fx.plan.compare_batch, autocast=False)
    diff = abs(device_fp32 - cpu_fp32)
    return {"device": device_fp32, "cpu": cpu_fp32, "abs_diff": diff, "equal": diff <= FP32_ATOL + FP32_RTOL * abs(cpu_fp32),
            "autocast": device_autocast, "samples": fx.plan.compare_batch,
            "autocast_rel_diff": None if device_autocast is None else abs(device_autocast - device_fp32) / max(abs(device_fp32), 1e-12)}


def _first_loss(ctx, strategy, samples: int, *, autocast: bool) -> tuple[float, float | None]:
    import torch

    from medcl.engine.sampling import StageSampler
    from medcl.models.norm import eval_mode

    sampler = StageSampler(ctx.tasks, ctx.stage.train_tasks, batch_size=samples, seed=0, stage_index=ctx.stage_index)
    batch = ctx.make_batch(*next(iter(sampler.batches(1))))
    with eval_mode(ctx.model), _no_tf32():
        fp32 = float(strategy.loss(ctx, batch)["loss"].detach())
        mixed = None
        if autocast and AUTOCAST[ctx.train.precision]:
            with torch.autocast(ctx.device.type, dtype=getattr(torch, AUTOCAST[ctx.train.precision])):
                mixed = float(strategy.loss(ctx, batch)["loss"].detach())
    ctx.model.zero_grad(set_to_none=True)
    return fp32, mixed


def _cpu():
    import torch

    return torch.device("cpu")


def _train_step_summary(rows: list[dict]) -> dict | None:
    """The plain training step (finetune, bf16): images/s and peak memory."""
    for row in rows:
        if row.get("strategy") == "finetune" and row.get("precision") == "bf16" and "images_per_s" in row:
            return {"strategy": "finetune", "precision": "bf16", "images_per_s": row["images_per_s"],
                    "peak_memory_mib": row["peak_memory_mib"], "batch": row["batch"]}
    return None


# ---------------------------------------------------------------- section: mid-task checkpoint and resume

RESUME_STRATEGY = "moe_adapters"


def check_resume(fx: Fixture, *, deadline: float) -> dict:
    n, k = fx.plan.resume_steps, fx.plan.resume_steps // 2
    reference = _resume_run(fx, n)
    repeat = _resume_run(fx, n)
    noise = max(abs(a - b) for a, b in zip(reference, repeat))
    with tempfile.TemporaryDirectory(prefix="medcl-gpu-check-") as tmp:
        checkpoints = Path(tmp)
        _resume_run(fx, k, write_to=checkpoints)
        resumed = _resume_run(fx, n, resume_from=checkpoints)
        control = _resume_run(fx, n, resume_from=checkpoints, forget_device_rng=True)
    tolerance = [max(RESUME_RTOL * (1 + abs(v)), 4 * noise) for v in reference[k:]]
    diffs = [abs(a - b) for a, b in zip(resumed, reference[k:])]
    control_diffs = [abs(a - b) for a, b in zip(control, reference[k:])]
    equal = len(resumed) == n - k and all(d <= t for d, t in zip(diffs, tolerance))
    differs = any(d > t for d, t in zip(control_diffs, tolerance))
    return {"ok": equal and differs, "strategy": RESUME_STRATEGY, "device": str(fx.device), "checkpoint_after": k,
            "uninterrupted": reference, "resumed": resumed, "equal": equal, "max_abs_diff": max(diffs, default=None),
            "noise_floor": noise, "control": control, "control_differs": differs,
            "control_max_abs_diff": max(control_diffs, default=None),
            "rng_saved": "cuda_rng" if fx.device.type == "cuda" else "torch_rng"}


def _resume_run(fx: Fixture, until: int, *, write_to: Path | None = None, resume_from: Path | None = None,
                forget_device_rng: bool = False) -> list[float]:
    """Stage 1 of a fresh ``moe_adapters`` worker (fp32, TF32 off) up to step ``until``: the losses
    of the steps it ran. ``write_to``: a mid-task checkpoint after the last step; ``resume_from``:
    start from the newest one there (``MidTaskCheckpoints.resume``)."""
    import torch

    from medcl.engine.checkpoint import SequenceState, write_checkpoint
    from medcl.engine.midtask import MidTaskCheckpoints, midtask_name, midtask_payload
    from medcl.strategies import build_strategy

    torch.manual_seed(987_654)  # a fresh process: generators in another state than the run that wrote the checkpoint
    strategy = build_strategy(RESUME_STRATEGY)
    ctx = make_ctx(fx, strategy, fx.device, precision="fp32", lr=fx.plan.resume_lr)
    ctx.train = ctx.train.model_copy(update={"steps_per_task": fx.plan.resume_steps})
    state = SequenceState(task_names=[t.name for t in ctx.tasks], stage_names=[s.name for s in ctx.stages])
    with _no_tf32():
        strategy.setup(ctx)
        sampler, optimisation = start_stage(ctx, strategy, 0)
        if resume_from is not None:
            midtask = MidTaskCheckpoints(resume_from, state, every=None, on_preemption=False)
            ctx.step = midtask.resume(ctx, strategy, *optimisation[1:])
            if forget_device_rng:
                (torch.cuda.manual_seed if ctx.device.type == "cuda" else torch.manual_seed)(123_457)
        losses = [step(ctx, strategy, *batch, optimisation)["loss"] for batch in sampler.batches(until, start_step=ctx.step)]
        if write_to is not None:
            write_checkpoint(write_to / midtask_name(0, ctx.step), rank=0, state=replace(state, mid_step=ctx.step),
                             model=ctx.model, strategy_state=midtask_payload(ctx, strategy, *optimisation[1:]))
    return losses


# ---------------------------------------------------------------- section: embedding throughput

def check_embed(fx: Fixture, *, deadline: float) -> dict:
    import numpy as np
    import torch

    from medcl.corpus.embed import Embedder, ModelInfo

    info = ModelInfo(name=fx.plan.model, image_size=fx.plan.image_size)
    rows, size = [], fx.plan.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (max(fx.plan.embed_batches), size, size, 3), dtype=np.uint8)
    for precision in ("fp32", "bf16"):
        embedder = Embedder(info, precision=precision, threads=torch.get_num_threads())
        for batch in fx.plan.embed_batches:
            if time.perf_counter() > deadline:
                rows.append({"precision": precision, "batch": batch, "ok": False, "skipped": "section budget spent"})
                continue
            rows.append({"precision": precision, "batch": batch, "device": embedder.device,
                         "autocast": str(embedder.autocast) if embedder.autocast else None,
                         "embedder_images_per_s": _embedder_rate(embedder, pixels[:batch], fx.plan.embed_rounds),
                         "tower_images_per_s": _tower_rate(embedder, pixels[:batch], fx.plan.embed_rounds)})
        del embedder
        _release_memory()
    best = max((r.get("tower_images_per_s") or 0 for r in rows if r.get("batch") == max(fx.plan.embed_batches)), default=0)
    return {"rows": rows, "reference": PUBLISHED, "best_tower_vs_reference": round(best / PUBLISHED["images_per_s"], 3)}


def _autocast(embedder):
    import torch

    if embedder.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=embedder.autocast)


def _embedder_rate(embedder, pixels, rounds: int) -> float:
    """uint8 pixels in, features on the host out: ``Embedder._encode_pixels`` under the embedder's autocast."""
    with _autocast(embedder):
        embedder._encode_pixels(pixels)  # warm-up
        began = time.perf_counter()
        for _ in range(rounds):
            embedder._encode_pixels(pixels)  # returns numpy: synchronised
    return round(rounds * len(pixels) / (time.perf_counter() - began), 1)


def _tower_rate(embedder, pixels, rounds: int) -> float:
    """The image tower alone on device-resident, normalised input (what timm's benchmark times)."""
    import torch

    from medcl.engine.preprocess import to_model_input

    bundle, device = embedder.bundle, torch.device(embedder.device)
    x = to_model_input(pixels, bundle.image_size, bundle.mean, bundle.std, device=device)
    with torch.inference_mode(), _autocast(embedder):
        bundle.model.encode_image(x)
        _sync(device)
        began = time.perf_counter()
        for _ in range(rounds):
            bundle.model.encode_image(x)
        _sync(device)
    return round(rounds * len(pixels) / (time.perf_counter() - began), 1)


# ---------------------------------------------------------------- section: FAISS

def check_faiss(fx: Fixture, *, deadline: float) -> dict:
    try:
        import faiss
    except ImportError:
        return {"carried": False, "note": "not carried: make gpu-check carries no FAISS wheel (a GPU build with the CUDA "
                                          "libraries it links would not fit the 64 MiB a call carries; size not "
                                          "measured); medcl's index code has no GPU path"}
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.standard_normal((fx.plan.faiss_rows, 512), dtype=np.float32)
    queries = rng.standard_normal((1000, 512), dtype=np.float32)
    faiss.normalize_L2(base)
    faiss.normalize_L2(queries)
    cpu = faiss.IndexFlatIP(512)
    cpu.add(base)
    expected = cpu.search(queries, 10)[1]
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    out = {"carried": True, "version": faiss.__version__, "gpus": gpus, "index_rows": fx.plan.faiss_rows}
    if not gpus:
        return {**out, "note": "this FAISS has no GPU support; only the CPU index ran"}
    index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    index.search(queries, 10)
    began = time.perf_counter()
    found = index.search(queries, 10)[1]
    seconds = time.perf_counter() - began
    return {**out, "queries_per_s": round(len(queries) / seconds, 1),
            "same_ids_as_cpu": float((found == expected).mean()), "ok": float((found == expected).mean()) >= 0.99}


# ---------------------------------------------------------------- section: environment

def check_env(fx: Fixture | None, *, deadline: float) -> dict:
    import importlib.metadata as metadata

    import torch

    cuda = torch.cuda.is_available()
    versions = {}
    for name in ("torch", "open_clip_torch", "timm", "peft", "pydantic", "numpy", "medcl"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
            "cuda": torch.version.cuda, "cuda_available": cuda, "python": platform.python_version(),
            "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
            "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            "cpu_threads": torch.get_num_threads(), "versions": versions,
            "tf32_default": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}


# ---------------------------------------------------------------- carrying it to a GPU machine

def carry_requirements() -> list[str]:
    """``name==version`` of each :data:`CARRY` distribution as installed here."""
    import importlib.metadata as metadata

    return [f"{name}=={metadata.version(name)}" for name in CARRY]


def check_carry(folder: Path, root: Path) -> dict:
    """The carry folder's size and what travels with it (the working tree: tracked and untracked,
    not ignored, files); ValueError over :data:`CARRY_LIMIT_BYTES`."""
    import subprocess

    carried = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True,
                            check=True).stdout.decode().split("\0")
    tree = sum((root / name).stat().st_size for name in listed if name and (root / name).is_file())
    total = carried + tree
    if total > CARRY_LIMIT_BYTES:
        raise ValueError(f"{folder} ({carried / 2**20:.1f} MiB) plus the working tree ({tree / 2**20:.1f} MiB) is "
                         f"{total / 2**20:.1f} MiB, over the {CARRY_LIMIT_BYTES >> 20} MiB a call may carry")
    return {"carry_mib": round(carried / 2**20, 2), "tree_mib": round(tree / 2**20, 2), "total_mib": round(total / 2**20, 2),
            "wheels": sorted(p.name for p in folder.glob("*.whl"))}


def device_command(folder: str, timeout_s: int = 420) -> str:
    """The command to run on the GPU machine (the repository root, ``folder`` carried, ``$OUT`` coming back)."""
    return (f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "
            f"{folder}/*.whl && export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && "
            f"timeout {timeout_s} python3 experiments/benchmarks/gpu_check.py --out $OUT/gpu_check.json")


# ---------------------------------------------------------------- main

def run(plan: Plan, out: Path | None) -> dict:
    import torch

    if plan.threads:
        torch.set_num_threads(plan.threads)
    report = Report(plan, out)
    report.section("env", check_env, None)
    fixture = {}

    def build(*, deadline: float) -> dict:
        fixture["fx"] = build_fixture(plan)
        return {"model": plan.model, "image_size": plan.image_size,
                "parameters": sum(p.numel() for p in fixture["fx"].bundle.model.parameters())}

    if report.section("model", build)["ok"]:
        for name, check in (("strategies", check_strategies), ("resume", check_resume), ("embed", check_embed)):
            report.section(name, check, fixture["fx"])
    report.data["forbidden_modules_loaded"] = [m for m in FORBIDDEN if sys.modules.get(m) is not None]  # None: blocked
    report.section("faiss", check_faiss, fixture.get("fx") or build_fixture_stub(plan))
    report.data["device"] = report.data["sections"]["env"].get("device")
    report.write()
    return report.data


def build_fixture_stub(plan: Plan) -> Fixture:
    """What the faiss section needs when the model could not be built (its plan only)."""
    return Fixture(bundle=None, tasks=[], device=None, plan=plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 2 steps (CI)")
    parser.add_argument("--out", type=Path, help="write the JSON here too (rewritten after every section)")
    parser.add_argument("--carry-requirements", action="store_true", help="print the pinned wheels to carry, one a line")
    parser.add_argument("--check-carry", type=Path, metavar="FOLDER", help="size FOLDER + the working tree against 64 MiB "
                        "and print the command to run on the GPU machine")
    args = parser.parse_args(argv)
    if args.carry_requirements:
        print("\n".join(carry_requirements()))
        return 0
    if args.check_carry:
        root = Path(__file__).resolve().parents[2]
        print(json.dumps(check_carry(args.check_carry, root), indent=1))
        print("\nOn the GPU machine, from the repository root, carrying", args.check_carry, ":\n")
        print(device_command(str(args.check_carry)))
        return 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --dry-run")
    data = run(DRY if args.dry_run else GPU, args.out)
    print(json.dumps(data, indent=1, default=str))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
