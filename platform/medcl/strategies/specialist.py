"""Task-specialised models: one model per task, each fine-tuned from the same starting weights
(docs/methods.md#2-paradigms, the "task-specialised" paradigm).

    theta_k = argmin over theta, started at theta_0, of CE_ls(task k)        for every task k
    a[t, j] = acc(theta_j, task j) if j <= t else acc(theta_0, task j)

Task j is evaluated with its own model once trained, with the starting (zero-shot) model before.
Nothing is forgotten (BWT = 0 by construction) and nothing is shared between tasks; the cost is
one stored model per task. The trained models are kept on CPU and saved in the strategy state
(by every rank: T models per rank per checkpoint); the starting weights are not, since the engine
rebuilds them from the seed before :meth:`setup`.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from medcl.strategies.base import Strategy, register_strategy


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


@register_strategy("specialist")
class Specialist(Strategy):
    description = "one model per task from the same starting weights (no forgetting, T models)"

    def __init__(self, params=None):
        super().__init__(params)
        self.trained: dict[int, dict[str, torch.Tensor]] = {}
        self.evaluator: torch.nn.Module | None = None

    def setup(self, ctx) -> None:
        self.start = cpu_state(ctx.model)

    def before_stage(self, ctx) -> None:
        ctx.model.load_state_dict(self.start)

    def after_stage(self, ctx) -> None:
        for task in ctx.stage.train_tasks:
            self.trained[task] = cpu_state(ctx.model)

    @contextlib.contextmanager
    def eval_model(self, ctx, task_index: int):
        """A separate copy of the model holding task ``task_index``'s weights (the training model is
        never touched, so nothing needs restoring)."""
        if self.evaluator is None:
            self.evaluator = copy.deepcopy(ctx.model).requires_grad_(False)
        self.evaluator.load_state_dict(self.trained.get(task_index, self.start))
        yield self.evaluator

    def state_dict(self) -> dict:
        return {"trained": dict(self.trained)}

    def load_state_dict(self, state: dict) -> None:
        self.trained = {int(k): v for k, v in state.get("trained", {}).items()}
