"""Joint training: one model on the union of every task's training data (docs/methods.md#2-paradigms).

    L = (1 / |B|) * sum over (x, y, k) in B of CE_ls(logit_scale * f(x) . g(prompts of task k), y)

with every batch B drawn from the pooled training sets of all tasks (``engine/sampling.py``), each
sample scored over its own task's classes. Not a continual method but its upper bound: there is a
single training stage named ``joint``, so the accuracy matrix has one trained row and metrics.json
gives only ``last`` (with a ``note`` saying why). ``train.steps_per_task`` counts per task: the joint
stage runs ``T * steps_per_task`` steps, the same total as a T-task sequence (``epochs_per_task`` is
over the pooled data, so it needs no scaling).
"""
from __future__ import annotations

from medcl.engine.context import Stage
from medcl.strategies.base import Strategy, register_strategy


@register_strategy("joint")
class Joint(Strategy):
    description = "one model on the union of all tasks (upper bound, one training stage)"

    def stages(self, tasks) -> list[Stage]:
        return [Stage(name="joint", train_tasks=tuple(range(len(tasks))))]
