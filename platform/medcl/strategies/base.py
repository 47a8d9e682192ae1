"""The strategy contract and registry: what one continual-learning method is allowed to change.

A method is one short file under ``strategies/`` (docs/adding-a-method.md)::

    @register_strategy("l2")
    class L2(Strategy):
        '''L = CE + lam * sum ||theta - theta_start||^2'''
        class Params(StrategyParams):
            lam: float = 1.0
        def before_stage(self, ctx):
            self.anchor = snapshot(ctx.model)
        def loss(self, ctx, batch):
            ce = ctx.task_loss(batch)
            reg = l2_penalty(ctx.model, self.anchor)
            return {"loss": ce + self.params.lam * reg, "ce": ce, "l2": reg}

On the driver, once per run before the workers start: :meth:`prepare` (e.g. PRIMED plans its
reference sets); what it returns reaches every worker as ``ctx.prepared``; :meth:`services` wraps
the training (actors the workers call, such as PRIMED's online retrieval service).

The engine (``medcl.engine.loop``) calls, in every Ray Train worker:
``setup(ctx)`` once, after the model is built (and before a checkpoint is restored);
for each :class:`~medcl.engine.context.Stage` from :meth:`stages`: ``before_stage(ctx)``, then per
step ``loss(ctx, batch)`` (must return ``"loss"``; other entries are logged), an optimiser step over
:meth:`trainable_parameters` with gradients averaged over workers, ``after_step(ctx)``;
then ``after_stage(ctx)``, then evaluation of every task ``k`` inside ``eval_model(ctx, k)``,
then ``extra_metrics(ctx)``; then a checkpoint holding the model weights and :meth:`state_dict`.
A stage trains one task for a continual method (``ctx.task_index``), several for ``joint``.
Every rank runs every hook; state that differs per rank (a rehearsal buffer shard) is fine, as long
as ``state_dict`` saves this rank's part under ``ctx.rank`` or is identical across ranks.
Randomness comes from ``ctx.rng(purpose)``; frozen teachers stay plain modules in eval mode with
``requires_grad=False``; helpers shared by several methods live in :mod:`.common`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator

import torch
from pydantic import BaseModel, ConfigDict

from medcl.data.task import Task
from medcl.engine.context import Batch, Stage, TrainContext
from medcl.registry import Registry

if TYPE_CHECKING:
    from medcl.config import ExperimentConfig

STRATEGIES: Registry[type["Strategy"]] = Registry("strategy", params="Params")
register_strategy = STRATEGIES.register


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: unknown fields are errors. Path fields (``PathStr``)
    are inputs the driver checks before Ray starts (:mod:`medcl.engine.inputs`), except those named
    in ``output_paths`` (folders the strategy writes)."""

    model_config = ConfigDict(extra="forbid")
    output_paths: ClassVar[tuple[str, ...]] = ()


class Strategy:
    """Base class: plain sequential training with the task loss. Override only what differs."""

    Params: ClassVar[type[StrategyParams]] = StrategyParams
    description: ClassVar[str] = ""

    def __init__(self, params: StrategyParams | None = None):
        self.params = params if params is not None else self.Params()

    def stages(self, tasks: list[Task]) -> list[Stage]:
        """Default: stage ``t`` trains task ``t`` alone."""
        return [Stage(name=task.name, train_tasks=(i,)) for i, task in enumerate(tasks)]

    def prepare(self, config: "ExperimentConfig", tasks: list[Task], run_dir: Path) -> Any:
        """On the driver, once per run (and again on a resume), before the workers start; runs as
        a Ray task declaring ``train.torch_threads`` CPUs. Returns something picklable that every
        worker sees as ``ctx.prepared`` (default: nothing to prepare, None)."""
        return None

    def input_problems(self) -> list[tuple[str, str]]:
        """On the driver, before Ray starts and before the run directory is pinned: ``(dotted
        field, message)`` for each input of :attr:`params` that exists but cannot serve (PRIMED:
        an ``index_dir`` without ``index.json``). Missing path fields are found for every strategy
        (:mod:`medcl.engine.inputs`); default: nothing more to check."""
        return []

    @contextlib.contextmanager
    def services(self, config: "ExperimentConfig", run_dir: Path) -> Iterator[None]:
        """On the driver of ``medcl run``, around training (after :meth:`prepare`): Ray actors the
        workers use while they train, started before and stopped after (PRIMED's online retrieval
        service). Default: none."""
        yield

    def setup(self, ctx: TrainContext) -> None:
        """Called once per worker after the model is built."""

    def trainable_parameters(self, ctx: TrainContext) -> Iterable[torch.nn.Parameter]:
        """Parameters the optimiser updates for the current stage (default: all that require grad)."""
        return [p for p in ctx.model.parameters() if p.requires_grad]

    def before_stage(self, ctx: TrainContext) -> None:
        """Called before the first step of each stage."""

    def loss(self, ctx: TrainContext, batch: Batch) -> dict[str, torch.Tensor]:
        """Loss terms for one batch; ``"loss"`` is what is minimised."""
        ce = ctx.task_loss(batch)
        return {"loss": ce, "ce": ce}

    def after_step(self, ctx: TrainContext) -> None:
        """Called after every optimiser step (e.g. a running weight ensemble)."""

    def after_stage(self, ctx: TrainContext) -> None:
        """Called after the last step of each stage, before evaluation."""

    @contextlib.contextmanager
    def eval_model(self, ctx: TrainContext, task_index: int) -> Iterator[torch.nn.Module]:
        """The model that task ``task_index`` is evaluated with (default: the model itself)."""
        yield ctx.model

    def extra_metrics(self, ctx: TrainContext) -> dict[str, float]:
        """Numbers to record in metrics.json after each stage (e.g. ``buffer_bytes``). Called on
        every rank after evaluation, so it may use collectives; rank 0's values are recorded."""
        return {}

    def model_files(self, ctx: TrainContext) -> dict[str, dict[str, torch.Tensor]] | None:
        """The model weights a stage's checkpoint keeps, as safetensors files: file name ->
        {name in ``ctx.model.state_dict()``: tensor}. On restore each file is loaded into the model
        by name, and what no file holds keeps the weights rebuilt from the seed before :meth:`setup`
        (e.g. a frozen base). None (default): the whole model as ``model.safetensors``."""
        return None

    def state_dict(self) -> dict:
        """Everything needed to resume after the current stage (tensors, lists, numbers, str)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state but the checkpoint has {sorted(state)}")

    def stage_state_dict(self) -> dict:
        """What changes *during* a stage besides the model and optimiser (e.g. a running weight
        ensemble updated in :meth:`after_step`), for a mid-task checkpoint; it is loaded with
        :meth:`load_stage_state_dict` after :meth:`before_stage` has run again on the stage's start
        model. State that only :meth:`before_stage` sets up (teachers, anchors) is rebuilt, not saved."""
        return {}

    def load_stage_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no in-stage state but the checkpoint has {sorted(state)}")


def build_strategy(name: str, params: dict | StrategyParams | None = None) -> Strategy:
    """Instantiate a registered strategy; ``params``: its typed ``Params`` as they are, or a dict
    validated by them (:meth:`medcl.registry.Registry.validate`)."""
    return STRATEGIES.get(name)(STRATEGIES.validate(name, params))
