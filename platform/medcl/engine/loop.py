"""The sequence loop that runs inside every Ray Train worker (one TorchTrainer per sequence).

    restore the last task checkpoint (Ray's, or the run directory's) or start fresh
    row 0: evaluate the starting model on every task; checkpoint task-0
    for each stage s: before_stage, train steps, after_stage, evaluate every task,
                      checkpoint task-<s> (model + strategy state + matrix), ray.train.report

Gradients are averaged over workers by :class:`medcl.engine.gradsync.GradSync`: hooks on the
stage's trainable parameters all-reduce buckets of gradients asynchronously while ``backward``
runs, rather than by wrapping the model in DDP: strategies run several forward passes per step
(task batch, replay, reference set, frozen teacher) and freeze different parameters per task (LoRA
pools), which DDP's one-forward-per-backward reducer does not allow. The arithmetic is DDP's (mean
of per-rank gradients, absent ones as zeros) and, like DDP, communication overlaps ``backward``.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch

from medcl.config import ExperimentConfig, strategy_params
from medcl.faults import maybe_fail
from medcl.engine.checkpoint import (SequenceState, checkpoint_problem, latest_checkpoint, read_state, report_checkpoint,
                                     restore_checkpoint, write_checkpoint)
from medcl.engine.context import TrainContext
from medcl.engine.memory import peak_memory
from medcl.engine.midtask import MidTaskCheckpoints
from medcl.engine.evaluate import evaluate_tasks
from medcl.engine.gradsync import GradSync
from medcl.engine.optim import build_optimizer, optimised_parameters, optimizer_step
from medcl.engine.progress import ProgressLog
from medcl.engine.resume import restore_newest
from medcl.engine.sampling import StageSampler
from medcl.engine.taskrefs import release
from medcl.engine.preprocess import to_model_input
from medcl.models import create_model
from medcl.models.norm import resolve_freeze_norm, sync_running_statistics
from medcl.rundir import RunDir
from medcl.storage import place
from medcl.strategies import build_strategy

GRAD_SYNC_DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # train.grad_sync_dtype -> GradSync(dtype=...)


def train_sequence(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config``: ``experiment`` (dict), ``tasks`` (ObjectRef of the
    ordered task list: light tasks whose splits are fetched when used, :mod:`medcl.engine.taskrefs`),
    ``run_dir`` (str), optionally ``prepared`` (what the strategy's driver-side
    ``prepare`` returned: ``ctx.prepared``) and ``gate`` (a sweep trial's
    :class:`medcl.sweep.gate.GateClient`: after each task's report, the loop goes on only when the
    trial says so, and otherwise returns, which ends the Train run normally)."""
    cfg = ExperimentConfig.model_validate(loop_config["experiment"])
    _quiet_ray_train_reports()
    torch.set_num_threads(cfg.train.torch_threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    tasks = ray.get(loop_config["tasks"])
    torch.manual_seed(cfg.seed)
    bundle = create_model(cfg.model.name, pretrained=cfg.model.pretrained, image_size=cfg.model.image_size)
    model = bundle.model.to(device)
    _broadcast_parameters(model, world)
    strategy = build_strategy(cfg.strategy.name, strategy_params(cfg))
    stages = strategy.stages(tasks)
    ctx = TrainContext(model=model, tokenizer=bundle.tokenizer, tasks=tasks, stages=stages, device=device,
                       rank=rank, world_size=world, label_smoothing=cfg.train.label_smoothing, seed=cfg.seed,
                       preprocess=lambda images: to_model_input(images, bundle.image_size, bundle.mean, bundle.std, device),
                       train=cfg.train, freeze_norm=resolve_freeze_norm(cfg.model.freeze_norm, cfg.model.pretrained),
                       prepared=loop_config.get("prepared"))
    ctx.train_mode()  # teachers taken in setup normalise as the training student does
    strategy.setup(ctx)
    run = RunDir(place(loop_config["run_dir"]))  # a local path or an object-store URI (medcl.storage)
    state = _restore(ctx, strategy, run.checkpoints)
    if state is None:
        state = SequenceState(task_names=[t.name for t in tasks], stage_names=[s.name for s in stages])
    log = ProgressLog(run, enabled=rank == 0, log_every=cfg.train.log_every, telemetry=cfg.telemetry)
    persist = bool(loop_config.get("persist_checkpoints"))  # Ray Train's local mode does not persist reports
    midtask = MidTaskCheckpoints(run.checkpoints, state, every=cfg.train.checkpoint_every,
                                 on_preemption=cfg.train.checkpoint_on_preemption, persist=persist)
    evaluate = lambda: evaluate_tasks(ctx, strategy, image_size=bundle.image_size, mean=bundle.mean,  # noqa: E731
                                    std=bundle.std, batch_size=cfg.train.eval_batch_size, split=cfg.train.eval_split)
    if state.zero_shot is None:
        state.zero_shot, state.auc_zero_shot = evaluate()
        log.row("zero_shot", state)
        if not _checkpoint_and_report(ctx, strategy, state, run.checkpoints, with_model=False, gate=loop_config.get("gate"),
                                      persist=persist):
            return
    for stage_index in range(state.stages_done, len(stages)):
        ctx.stage_index = stage_index
        started = time.perf_counter()
        steps, n_params = _train_stage(ctx, strategy, cfg, log, midtask)
        accuracy, auc = evaluate()
        state.rows.append(accuracy)
        state.auc_rows.append(auc)
        state.wall_time_s.append(time.perf_counter() - started)
        state.steps.append(steps)
        state.trainable_parameters.append(n_params)
        state.peak_memory.append(peak_memory(device))
        state.strategy_metrics.append(strategy.extra_metrics(ctx))
        log.row(stages[stage_index].name, state)
        go_on = _checkpoint_and_report(ctx, strategy, state, run.checkpoints, with_model=True, gate=loop_config.get("gate"),
                                       persist=persist)
        midtask.prune(ctx)  # the stage's mid-task checkpoints are superseded by task-<t>
        maybe_fail("after_stage", stage=state.stages_done, rank=rank)
        if not go_on:
            return


def _train_stage(ctx: TrainContext, strategy, cfg: ExperimentConfig, log: ProgressLog,
                 midtask: MidTaskCheckpoints) -> tuple[int, int]:
    stage = ctx.stage
    sampler = StageSampler(ctx.tasks, stage.train_tasks, batch_size=cfg.train.batch_size, seed=cfg.seed,
                           stage_index=ctx.stage_index, rank=ctx.rank, world_size=ctx.world_size)
    steps = cfg.train.steps_per_task and cfg.train.steps_per_task * len(stage.train_tasks)  # per task mixed in
    total = sampler.steps_for(steps, cfg.train.epochs_per_task)
    torch.manual_seed(cfg.seed * 1_000_003 + ctx.stage_index * 1_009 + ctx.rank)
    ctx.step, ctx.total_steps = 0, total
    ctx.train_mode()  # before the hook: teachers copied there see the training modes
    strategy.before_stage(ctx)
    params = optimised_parameters(strategy.trainable_parameters(ctx), ctx.model, cfg.train.logit_scale)
    optimizer, scheduler = build_optimizer(params, cfg.train, total)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None
    ctx.train_mode()  # again: before_stage may have frozen parameters (a LoRA base and its BatchNorm)
    ctx.step = midtask.resume(ctx, strategy, optimizer, scheduler, scaler)  # 0, or the step a mid-task checkpoint saved
    log.start_stage(stage.name, ctx.stage_index, len(ctx.stages), total)
    grad_sync = GradSync(params, ctx.world_size, dtype=GRAD_SYNC_DTYPES[cfg.train.grad_sync_dtype])
    try:
        _run_steps(ctx, strategy, cfg, sampler, total, grad_sync, (params, optimizer, scheduler, scaler), log, midtask)
    finally:
        grad_sync.close()
    strategy.after_stage(ctx)
    release(ctx.tasks, "train")  # light tasks (medcl.engine.taskrefs): the stage's pixels are no longer pinned
    sync_running_statistics(ctx.model, ctx.world_size)
    return total, sum(p.numel() for p in params)


def _run_steps(ctx: TrainContext, strategy, cfg: ExperimentConfig, sampler: StageSampler, total: int,
               grad_sync: GradSync, optimisation: tuple, log: ProgressLog, midtask: MidTaskCheckpoints) -> None:
    """The stage's optimiser steps from ``ctx.step`` to ``total``: loss, backward with gradients
    averaged over workers as they arrive (``grad_sync``), clipped step, the strategy's hook,
    progress and mid-task checkpoints."""
    params, optimizer, scheduler, scaler = optimisation
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
    for images, labels, task_ids in sampler.batches(total, start_step=ctx.step):
        batch = ctx.make_batch(images, labels, task_ids)
        with torch.autocast(ctx.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            terms = strategy.loss(ctx, batch)
        optimizer.zero_grad(set_to_none=True)
        grad_sync.arm()
        (scaler.scale(terms["loss"]) if scaler else terms["loss"]).backward()
        grad_sync.finish()
        optimizer_step(optimizer, scheduler, params, cfg.train.grad_clip, scaler)
        ctx.step += 1
        maybe_fail("step", step=ctx.step, stage=ctx.stage_index + 1, rank=ctx.rank)
        strategy.after_step(ctx)
        log.step(ctx.step, terms, len(batch) * ctx.world_size)
        midtask.after_step(ctx, strategy, optimizer, scheduler, scaler)


def _restore(ctx: TrainContext, strategy, checkpoints_dir: Path) -> SequenceState | None:
    """Restore the newest task boundary (:func:`medcl.engine.resume.restore_newest`). A mid-task
    checkpoint (Ray's newest may be one) is not restored here but by
    :meth:`MidTaskCheckpoints.resume`, over its stage's ``task-<t>``."""
    def boundary_progress(directory: Path) -> int | None:
        state = read_state(directory)
        return None if state.mid_step else state.stages_done

    on_disk = latest_checkpoint(checkpoints_dir, ranks=ctx.world_size, set_aside_torn=ctx.rank == 0,
                                events=checkpoints_dir.parent / "events.jsonl")  # torn ones: rank 0 sets them aside
    return restore_newest(on_disk, boundary_progress, lambda directory: _load(ctx, strategy, directory),
                          valid=lambda directory: checkpoint_problem(directory, ctx.world_size) is None)


def _load(ctx: TrainContext, strategy, directory: Path) -> SequenceState:
    state, strategy_state = restore_checkpoint(directory, rank=ctx.rank, model=ctx.model)
    if state.stages_done:
        ctx.stage_index = state.stages_done - 1
    strategy.load_state_dict(strategy_state)
    return state


def _checkpoint_and_report(ctx: TrainContext, strategy, state: SequenceState, checkpoints_dir, *, with_model: bool,
                           gate=None, persist: bool = False) -> bool:
    """Checkpoint and report ``state`` (each rank commits its part once Ray Train persisted it:
    :func:`medcl.engine.checkpoint.report_checkpoint`); False when the sweep trial's ``gate`` says stop."""
    done = state.stages_done
    with tempfile.TemporaryDirectory(prefix="medcl-ckpt-") as tmp:
        model_files = strategy.model_files(ctx) if with_model else None
        manifest = write_checkpoint(Path(tmp), rank=ctx.rank, state=state, strategy_state=strategy.state_dict(),
                                    model=ctx.model if with_model and model_files is None else None,
                                    model_files=model_files, commit=False)
        row = state.rows[-1] if state.rows else state.zero_shot
        metrics = {"stage": done, "stages": len(ctx.stages), "row": row,
                   "mean_seen": _mean(row[: done] if done else row), "done": done == len(ctx.stages)}
        report_checkpoint(metrics, Path(tmp), f"task-{done}", checkpoints_dir / f"task-{done}", rank=ctx.rank,
                          manifest=manifest, persist=persist)
        return gate is None or gate.after_report(ctx.rank, done, Path(tmp))


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report (checkpoint and metrics) at INFO from a logger named by its
    file path; the progress lines already say what happened."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # pragma: no cover - Ray moved it; the lines are only noise
        return
    getattr(train_context, "logger", logging.getLogger(train_context.__file__)).setLevel(logging.WARNING)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _broadcast_parameters(model: torch.nn.Module, world: int) -> None:
    if world > 1:
        for tensor in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)
