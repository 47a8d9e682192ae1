"""The strategy contract and registry: what one continual-learning method is allowed to change.

A method is one short file under ``strategies/``::

    @register_strategy("l2")
    class L2(Strategy):
        '''L = CE + lam * sum ||theta - theta_start||^2'''
        class Params(StrategyParams):
            lam: float = 1.0
        def before_task(self, ctx):
            self.anchor = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
        def loss(self, ctx, batch):
            ce = ctx.task_loss(batch)
            reg = sum(((p - self.anchor[n]) ** 2).sum() for n, p in ctx.model.named_parameters())
            return {"loss": ce + self.params.lam * reg, "ce": ce, "l2": reg}

The engine (``medcl.engine.loop``) calls, in every Ray Train worker:

``setup(ctx)`` once, after the model is built (and before a checkpoint is restored);
for each stage from :meth:`stages`: ``before_task(ctx)``, then per step ``loss(ctx, batch)``
(must return ``"loss"``; other entries are logged), an optimiser step over
:meth:`trainable_parameters` with gradients averaged over workers, ``after_step(ctx)``;
then ``after_task(ctx)``, then evaluation of every task ``k`` inside ``eval_model(ctx, k)``,
then ``extra_metrics(ctx)``; then a checkpoint holding the model weights and :meth:`state_dict`.
Every rank runs every hook; state that differs per rank (a rehearsal buffer shard) is fine, as long
as ``state_dict`` saves this rank's part under ``ctx.rank`` or is identical across ranks.
Frozen teachers stay plain modules in eval mode with ``requires_grad=False``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterable, Iterator

import torch
from pydantic import BaseModel, ConfigDict

from medcl.registry import Registry

if TYPE_CHECKING:
    from medcl.data.task import Task
    from medcl.engine.context import Batch, TrainContext

STRATEGIES: Registry[type["Strategy"]] = Registry("strategy", params="Params")
register_strategy = STRATEGIES.register


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Stage:
    """One training stage of a sequence: the tasks whose train splits it mixes, and its name
    (the row label of the accuracy matrix). Continual methods have one stage per task."""

    name: str
    train_tasks: tuple[int, ...]


class Strategy:
    """Base class: plain sequential training with the task loss. Override only what differs."""

    Params: ClassVar[type[StrategyParams]] = StrategyParams
    description: ClassVar[str] = ""

    def __init__(self, params: StrategyParams | None = None):
        self.params = params if params is not None else self.Params()

    def stages(self, tasks: list["Task"]) -> list[Stage]:
        """Default: stage ``t`` trains task ``t`` alone."""
        return [Stage(name=task.name, train_tasks=(i,)) for i, task in enumerate(tasks)]

    def setup(self, ctx: "TrainContext") -> None:
        """Called once per worker after the model is built."""

    def trainable_parameters(self, ctx: "TrainContext") -> Iterable[torch.nn.Parameter]:
        """Parameters the optimiser updates for the current stage (default: all that require grad)."""
        return [p for p in ctx.model.parameters() if p.requires_grad]

    def before_task(self, ctx: "TrainContext") -> None:
        """Called before the first step of each stage."""

    def loss(self, ctx: "TrainContext", batch: "Batch") -> dict[str, torch.Tensor]:
        """Loss terms for one batch; ``"loss"`` is what is minimised."""
        ce = ctx.task_loss(batch)
        return {"loss": ce, "ce": ce}

    def after_step(self, ctx: "TrainContext") -> None:
        """Called after every optimiser step (e.g. a running weight ensemble)."""

    def after_task(self, ctx: "TrainContext") -> None:
        """Called after the last step of each stage, before evaluation."""

    @contextlib.contextmanager
    def eval_model(self, ctx: "TrainContext", task_index: int) -> Iterator[torch.nn.Module]:
        """The model that task ``task_index`` is evaluated with (default: the model itself)."""
        yield ctx.model

    def extra_metrics(self, ctx: "TrainContext") -> dict[str, float]:
        """Numbers to record in metrics.json after each stage (e.g. ``buffer_bytes``). Called on
        every rank after evaluation, so it may use collectives; rank 0's values are recorded."""
        return {}

    def model_files(self, ctx: "TrainContext") -> dict[str, dict[str, torch.Tensor]] | None:
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


def build_strategy(name: str, params: dict | StrategyParams | None = None) -> Strategy:
    """Instantiate a registered strategy; ``params``: its typed ``Params`` as they are, or a dict
    validated by them (:meth:`medcl.registry.Registry.validate`)."""
    return STRATEGIES.get(name)(STRATEGIES.validate(name, params))
