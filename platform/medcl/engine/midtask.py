"""Mid-task checkpoints: resume a task at the exact step it was interrupted after.

A task-boundary checkpoint ``task-<t>`` (:mod:`medcl.engine.checkpoint`) holds what is needed
*between* stages: the model, the strategy's :meth:`~medcl.strategies.base.Strategy.state_dict` and
the matrix so far. Within a stage more is live, so a mid-task checkpoint ``task-<t>-step-<n>``
(``n`` steps of stage ``t + 1`` done) holds, in the same sha256-checked layout:

- ``state.json``: the matrix so far with ``mid_step = n``;
- ``model.safetensors``: the whole model after step ``n`` (LoRA adapters and all);
- ``strategy-rank<r>.pt``: ``{"strategy": state_dict(), "stage": stage_state_dict(), "optimizer",
  "scheduler", "scaler", "torch_rng", "cuda_rng"}``, per rank.

The data order needs nothing: step ``s``'s batch is a function of ``(seed, stage, s)``
(:class:`~medcl.engine.sampling.StageSampler` with ``start_step``), and so are the strategies'
per-step generators (``ctx.rng(purpose, step)``). On resume the loop restores ``task-<t>`` as
always, runs ``before_stage`` again on that start model (teachers and anchors are rebuilt exactly),
builds the optimiser, then loads the newest valid ``task-<t>-step-<n>`` over all of it and trains
steps ``n + 1 ..``, so the losses equal an uninterrupted run's.

Writing one: every ``train.checkpoint_every`` steps (``"auto"``, the default: every
:data:`GPU_CHECKPOINT_EVERY` steps on a GPU, none on CPU), and (``train.checkpoint_on_preemption``) once
per stage when ``ray.train.get_preemption_info()`` reports that a worker's node is being preempted
(public, alpha, in Ray 2.60; a barrier over the workers, called by all of them after every step).
A stage's last step writes none: the boundary checkpoint follows it. Each rank commits its part
after Ray Train persisted it (``manifest-rank<r>.json`` written last, atomically:
:mod:`medcl.engine.checkpoint`); a torn one is set aside at resume and the one before it is used.

Pruning (rank 0, after each report returned): only the newest complete mid-task checkpoint of the
stage in progress is kept; older ones of that stage, and every mid-task checkpoint of a finished
stage (its ``task-<t>`` supersedes them), are deleted through :mod:`medcl.storage` (a local run
directory or an object store). Each holds a whole model, so without this a long task with
``checkpoint_every`` would fill the disk.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from medcl.engine.checkpoint import (SequenceState, checkpoint_problem, report_checkpoint, restore_checkpoint, set_aside,
                                     write_checkpoint)
from medcl.confine import rmtree_below

_NAME = re.compile(r"task-(\d+)-step-(\d+)")
# train.checkpoint_every "auto" on a GPU: a spot loss costs at most this many steps. Each checkpoint
# holds the model and AdamW's two moments (3x the weights: ~1.8 GB for a ViT-B/16 CLIP), some
# seconds on NFS; 1000 steps of such a model are minutes on one GPU, so the write costs a few percent.
GPU_CHECKPOINT_EVERY = 1000


def resolve_every(every, device_type: str) -> int | None:
    """Steps between mid-task checkpoints: ``train.checkpoint_every`` with ``"auto"`` resolved
    (:data:`GPU_CHECKPOINT_EVERY` on ``cuda``, else None: task boundaries only)."""
    if every == "auto":
        return GPU_CHECKPOINT_EVERY if device_type == "cuda" else None
    return every


def midtask_name(stages_done: int, step: int) -> str:
    return f"task-{stages_done}-step-{step}"


def midtask_checkpoints(checkpoints_dir) -> list[tuple[int, int, object]]:
    """Every ``task-<t>-step-<n>`` under ``checkpoints_dir`` as ``(t, n, path)``, complete or not."""
    found = []
    for path in checkpoints_dir.glob("task-*-step-*"):
        match = _NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found, key=lambda item: item[:2])


def prune_midtask(checkpoints_dir, stages_done: int, ranks: int = 1) -> list[str]:
    """Delete the mid-task checkpoints no resume can pick (see the module doc); their names."""
    keep = latest_midtask(checkpoints_dir, stages_done, ranks)
    keep_step = _step(keep) if keep is not None else 0
    doomed = [path for stage, step, path in midtask_checkpoints(checkpoints_dir)
              if stage < stages_done or (stage == stages_done and step < keep_step)]
    for path in doomed:
        rmtree_below(path, checkpoints_dir)
    return [path.name for path in doomed]


def _step(path) -> int:
    return int(_NAME.fullmatch(path.name).group(2))


def latest_midtask(checkpoints_dir, stages_done: int, ranks: int = 1, *, set_aside_torn: bool = False):
    """The valid (committed, every file's size and sha256 as listed: :func:`~medcl.engine.checkpoint.
    checkpoint_problem`) ``task-<stages_done>-step-<n>`` with the largest ``n``, or None. Newer ones
    that are torn are skipped and, with ``set_aside_torn`` (one process: the driver, or rank 0),
    renamed ``<name>.torn-<time>`` and reported in the run's ``events.jsonl``."""
    for stage, _, path in reversed(midtask_checkpoints(checkpoints_dir)):
        if stage != stages_done:
            continue
        problem = checkpoint_problem(path, ranks)
        if problem is None:
            return path
        if set_aside_torn:
            set_aside(path, problem, events=checkpoints_dir.parent / "events.jsonl")
    return None


def midtask_payload(ctx, strategy, optimizer, scheduler, scaler) -> dict:
    """This rank's ``strategy-rank<r>.pt`` of a mid-task checkpoint (the module doc lists its keys);
    ``cuda_rng``: the generator of ``ctx.device`` when it is a GPU, else None."""
    return {"strategy": strategy.state_dict(), "stage": strategy.stage_state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None}


class MidTaskCheckpoints:
    """The loop's mid-task checkpointing for one run: :meth:`resume` at a stage's start and
    :meth:`after_step` after every step."""

    def __init__(self, checkpoints_dir, state: SequenceState, *, every: int | str | None, on_preemption: bool,
                 persist: bool = False):
        self.checkpoints_dir, self.state, self.persist = checkpoints_dir, state, persist
        self.every, self.on_preemption = every, on_preemption
        self.saved_on_preemption = False

    def resume(self, ctx, strategy, optimizer, scheduler, scaler) -> int:
        """Load the newest mid-task checkpoint of the stage about to train, if any; the step to
        start from (0 without one). Call after ``before_stage`` and building the optimiser."""
        self.saved_on_preemption = False
        directory = latest_midtask(self.checkpoints_dir, self.state.stages_done, ranks=ctx.world_size,
                                   set_aside_torn=ctx.rank == 0)
        if directory is None:
            return 0
        saved, payload = restore_checkpoint(directory, rank=ctx.rank, model=ctx.model)
        if saved.stages_done != self.state.stages_done or not 0 < saved.mid_step < ctx.total_steps:
            raise ValueError(f"{directory}: step {saved.mid_step} after {saved.stages_done} stages does not "
                             f"continue stage {self.state.stages_done + 1} of {ctx.total_steps} steps")
        strategy.load_state_dict(payload["strategy"])
        strategy.load_stage_state_dict(payload["stage"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(payload["scaler"])
        torch.set_rng_state(payload["torch_rng"])
        if payload.get("cuda_rng") is not None and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(payload["cuda_rng"], ctx.device)
        return saved.mid_step

    def after_step(self, ctx, strategy, optimizer, scheduler, scaler) -> str | None:
        """Write a mid-task checkpoint if one is due; its name, or None."""
        if ctx.step >= ctx.total_steps:
            return None  # the task-boundary checkpoint follows
        every = resolve_every(self.every, ctx.device.type)
        due = bool(every) and ctx.step % every == 0
        if self.on_preemption and not self.saved_on_preemption:
            import ray.train  # here, not at import: the GPU check (experiments/benchmarks/gpu_check.py) runs without Ray

            if ray.train.get_preemption_info() is not None:  # every rank calls it after every step
                self.saved_on_preemption = due = True
        if not due:
            return None
        return self._write(ctx, strategy, optimizer, scheduler, scaler)

    def _write(self, ctx, strategy, optimizer, scheduler, scaler) -> str:
        name = midtask_name(self.state.stages_done, ctx.step)
        payload = midtask_payload(ctx, strategy, optimizer, scheduler, scaler)
        state = replace(self.state, mid_step=ctx.step)
        with tempfile.TemporaryDirectory(prefix="medcl-midtask-") as tmp:
            manifest = write_checkpoint(Path(tmp), rank=ctx.rank, state=state, model=ctx.model, strategy_state=payload,
                                        commit=False)
            metrics = {"stage": self.state.stages_done, "stages": len(ctx.stages), "step": ctx.step,
                       "steps": ctx.total_steps, "done": False}
            report_checkpoint(metrics, Path(tmp), name, self.checkpoints_dir / name, rank=ctx.rank, manifest=manifest,
                              persist=self.persist)
        self.prune(ctx)
        return name

    def prune(self, ctx) -> None:
        """Rank 0 deletes the mid-task checkpoints superseded by the newest one or by a task boundary."""
        if ctx.rank == 0:
            prune_midtask(self.checkpoints_dir, self.state.stages_done, ranks=ctx.world_size)

