"""The pretraining loop that runs inside every Ray Train worker.

    restore the newest step-<n> checkpoint (Ray's, or the run directory's) or start fresh
    step 0: held-out metrics of the starting model (rank 0)
    for each step: this rank's B/w pairs (from memory, or its shard of the corpus stream),
                   randomly cropped and flipped when data.augment is set (medcl.pretrain.augment)
                   -> both towers -> InfoNCE over the global batch
                   (features all-gathered, medcl.pretrain.loss) -> backward -> gradients averaged
                   over workers (medcl.engine.optim.sync_gradients) -> clipped AdamW step
                   every checkpoint_every steps and at the end: checkpoint + ray.train.report
    after the last step: held-out metrics again, final checkpoint (state.after set)

As in the sequence engine, gradients are averaged by an explicit bucketed all-reduce instead of a
DDP wrapper (one code path for both trainers); weights are broadcast from rank 0 at the start.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch

from medcl.engine.loop import _broadcast_parameters, _quiet_ray_train_reports
from medcl.engine.optim import build_optimizer, optimizer_step, sync_gradients
from medcl.engine.preprocess import to_model_input
from medcl.engine.progress import ProgressLog
from medcl.faults import maybe_fail
from medcl.models import create_model
from medcl.models.norm import sync_running_statistics
from medcl.pretrain import checkpoint as ckpt
from medcl.pretrain.augment import BatchAugment
from medcl.pretrain.config import PretrainConfig
from medcl.pretrain.data import PairSampler, PretrainData
from medcl.pretrain.loss import clamp_logit_scale, contrastive_loss, global_clip_loss
from medcl.pretrain.retrieval import heldout_metrics
from medcl.pretrain.stream import STREAM_NAME, StreamBatches
from medcl.rundir import RunDir
from medcl.storage import place

CHECKPOINTS_PER_RUN = 4
STAGE_NAME = "pretrain"


def pretrain_worker(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config``: ``config`` (dict), ``run_dir`` (str), ``persist``
    (copy each checkpoint into the run directory too: Ray Train's local mode keeps reported
    checkpoints in memory only), and the data (:mod:`medcl.pretrain.inputs`): either ``data`` (an
    ObjectRef of the synthmed PretrainData) or ``heldout`` (ImageCaptions) and ``total_steps`` with
    the training rows in the Ray Train dataset ``train`` (:mod:`medcl.pretrain.stream`)."""
    cfg = PretrainConfig.model_validate(loop_config["config"])
    _quiet_ray_train_reports()
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)  # open_clip's gather
    torch.set_num_threads(cfg.train.torch_threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    heldout, total, batch_source = _data_source(loop_config, cfg, rank, world)
    torch.manual_seed(cfg.seed)
    bundle = create_model(cfg.model.name, pretrained=cfg.model.pretrained, image_size=cfg.model.image_size)
    model = bundle.model.to(device)
    _broadcast_parameters(model, world)
    preprocess = lambda images: to_model_input(images, bundle.image_size, bundle.mean, bundle.std, device)  # noqa: E731
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, cfg.train, total)
    run = RunDir(place(loop_config["run_dir"]))
    state = _restore(run.checkpoints, model, optimizer, scheduler, rank) or ckpt.PretrainState(total_steps=total)
    evaluate = lambda: heldout_metrics(model, bundle.tokenizer, heldout, preprocess,  # noqa: E731
                                       batch_size=cfg.train.eval_batch_size, device=device) if rank == 0 else None
    if state.before is None:
        state.before = evaluate()
    _train(cfg, model, bundle.tokenizer, preprocess, batch_source(state), (optimizer, scheduler, params), state, run,
           rank=rank, world=world, persist=loop_config.get("persist", False))
    if not state.done:
        sync_running_statistics(model, world)  # BatchNorm: the saved statistics are every rank's mean
        state.after = evaluate() or {}
        _checkpoint_and_report(state, model, optimizer, scheduler, rank, run, loop_config.get("persist", False))


def _data_source(loop_config: dict, cfg: PretrainConfig, rank: int, world: int):
    """``(held-out pairs, total steps, state -> batch source)``: pairs in memory (exact replay on
    resume) or this rank's shard of the corpus stream (see :mod:`medcl.pretrain.stream` for what a
    resume replays). A batch source has ``batches(total, start_step)``."""
    if "data" in loop_config:
        data: PretrainData = ray.get(loop_config["data"])
        sampler = PairSampler(data.train, batch_size=cfg.train.batch_size, seed=cfg.seed, rank=rank, world_size=world)
        return data.heldout, sampler.steps_for(cfg.train.steps, cfg.train.epochs), lambda state: sampler
    shard = ray.train.get_dataset_shard(STREAM_NAME)
    return loop_config["heldout"], loop_config["total_steps"], lambda state: StreamBatches(
        shard, local_batch_size=cfg.train.batch_size // world, seed=cfg.seed, state=state)


def _train(cfg: PretrainConfig, model, tokenizer, preprocess, sampler: PairSampler | StreamBatches, optim,
           state: ckpt.PretrainState, run: RunDir, *, rank: int, world: int, persist: bool) -> None:
    """Steps ``state.step + 1 .. total``: global InfoNCE, synced gradients, periodic checkpoints."""
    optimizer, scheduler, params = optim
    device = next(model.parameters()).device
    total = state.total_steps
    log = ProgressLog(run, enabled=rank == 0, log_every=cfg.train.log_every)
    log.start_stage(STAGE_NAME, 0, 1, total)
    log.stage_label = STAGE_NAME
    every = cfg.train.checkpoint_every or max(1, -(-total // CHECKPOINTS_PER_RUN))
    loss_fn = global_clip_loss(rank, world)
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None
    model.train()
    started = time.perf_counter()
    augment = BatchAugment(cfg.data.augment, seed=cfg.seed, rank=rank)
    for images, captions in sampler.batches(total, start_step=state.step):
        images = augment(images, state.step + 1)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = contrastive_loss(model, loss_fn, preprocess(images), tokenizer(captions).to(device))
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        sync_gradients(params, world)
        optimizer_step(optimizer, scheduler, params, cfg.train.grad_clip, scaler)
        clamp_logit_scale(model)
        state.step += 1
        log.step(state.step, {"loss": loss, "logit_scale": model.logit_scale.exp()}, len(captions) * world)
        if state.step == 1 or state.step % every == 0 or state.step == total:
            state.train_loss.append([state.step, float(loss.detach())])
        if state.step % every == 0 and state.step < total:
            state.wall_time_s += time.perf_counter() - started
            started = time.perf_counter()
            _checkpoint_and_report(state, model, optimizer, scheduler, rank, run, persist)
        maybe_fail("step", step=state.step, stage=1, rank=rank)
    state.wall_time_s += time.perf_counter() - started


def _restore(checkpoints_dir: Path, model, optimizer, scheduler, rank: int) -> ckpt.PretrainState | None:
    """The newest valid ``step-<n>`` (:func:`medcl.pretrain.checkpoint.restore_latest`)."""
    return ckpt.restore_latest(checkpoints_dir, model, optimizer, scheduler, rank=rank)


def _checkpoint_and_report(state: ckpt.PretrainState, model, optimizer, scheduler, rank: int, run: RunDir,
                           persist: bool) -> None:
    """Every rank reports (the call is a barrier); rank 0 attaches the checkpoint and commits it
    (:func:`medcl.pretrain.checkpoint.save_and_report`)."""
    ckpt.save_and_report(state, model, optimizer, scheduler, rank=rank, checkpoints_dir=run.checkpoints, persist=persist)
