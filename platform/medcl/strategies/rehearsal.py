"""Experience replay from a sharded buffer: the "continual + rehearsal" paradigm of CLMFM (Yi et al.,
2023; docs/methods.md#2-paradigms).

    L = (1 / (|B| + |R|)) * sum over (x, y, k) in B + R of CE_ls(logit_scale * f(x) . g(prompts of task k), y)

B is the current batch, R a replay batch drawn without replacement from the buffer of earlier
tasks' samples, |R| = round(|B| * f / (1 - f)), so replayed samples are a fraction f
(``replay_fraction``) of every combined batch; each is scored over its own task's classes.

The buffer holds ``buffer_size`` samples in all, stored compactly (uint8 image at its stored size,
label, task, index in the task's training split). It is filled at the end of each task with that
task's training samples, offered in a seeded random order; ``policy``:

* ``reservoir``: the n-th sample ever offered takes a random slot with probability capacity / n
  (Vitter's algorithm R), so the buffer is a uniform sample of everything offered;
* ``class_balanced`` / ``task_balanced``: once full, a sample whose class (task) has fewer slots
  than the largest class (task) replaces a random slot of the largest one; otherwise it is dropped
  (GDumb's greedy balancer).

Under DDP each rank owns one shard for the whole run: capacity ``buffer_size // world`` (+1 on the
first ``buffer_size % world`` ranks), offered only the samples ``i`` with ``i % world == rank``, so
shards are disjoint and their union is the global buffer. Each rank replays from its own shard
(its rows of the global batch). ``buffer_samples`` and ``buffer_bytes`` (summed over ranks) go to
metrics.json; the shard is saved in ``strategy-rank<r>.pt``.
"""
from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field

from medcl.strategies.base import Strategy, StrategyParams, register_strategy
from medcl.strategies.common import concat


def shard_capacity(buffer_size: int, rank: int, world_size: int) -> int:
    return buffer_size // world_size + (1 if rank < buffer_size % world_size else 0)


class ReplayBuffer:
    """Fixed-capacity store of (uint8 image, label, task, sample id) with a replacement policy."""

    def __init__(self, capacity: int, policy: str):
        self.capacity, self.policy, self.seen = capacity, policy, 0
        self.images: list[np.ndarray] = []
        self.labels: list[int] = []
        self.tasks: list[int] = []
        self.ids: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image in self.images) + 3 * 8 * len(self)

    def offer(self, image: np.ndarray, label: int, task: int, index: int, rng: np.random.Generator) -> None:
        self.seen += 1
        if len(self) < self.capacity:
            self.images.append(image.copy())
            self.labels.append(label)
            self.tasks.append(task)
            self.ids.append(index)
        elif (slot := self._victim(label, task, rng)) is not None:
            self.images[slot], self.labels[slot], self.tasks[slot], self.ids[slot] = image.copy(), label, task, index

    def _victim(self, label: int, task: int, rng: np.random.Generator) -> int | None:
        if self.policy == "reservoir":
            j = int(rng.integers(self.seen))
            return j if j < self.capacity else None
        keys = list(zip(self.tasks, self.labels)) if self.policy == "class_balanced" else self.tasks
        counts = Counter(keys)
        largest = max(counts.values(), default=0)
        if counts[(task, label) if self.policy == "class_balanced" else task] >= largest:
            return None
        big = [key for key, count in counts.items() if count == largest]
        return int(rng.choice([i for i, key in enumerate(keys) if key in big]))

    def sample(self, ctx, n: int, rng: np.random.Generator):
        """A model-ready batch of ``min(n, len)`` distinct stored samples (grouped by stored shape)."""
        picks = rng.choice(len(self), size=min(n, len(self)), replace=False)
        parts = []
        for shape in sorted({self.images[i].shape for i in picks}):
            rows = [i for i in picks if self.images[i].shape == shape]
            parts.append(ctx.make_batch(np.stack([self.images[i] for i in rows]),
                                        np.array([self.labels[i] for i in rows]), np.array([self.tasks[i] for i in rows])))
        return concat(parts)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "policy": self.policy, "seen": self.seen,
                "images": [torch.from_numpy(image) for image in self.images],
                "labels": torch.tensor(self.labels, dtype=torch.int64), "tasks": torch.tensor(self.tasks, dtype=torch.int64),
                "ids": torch.tensor(self.ids, dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity or state["policy"] != self.policy:
            raise ValueError(f"the checkpoint's buffer shard has capacity {state['capacity']} ({state['policy']}), this "
                             f"run expects {self.capacity} ({self.policy}): was it written with another number of workers?")
        self.seen = int(state["seen"])
        self.images = [image.numpy() for image in state["images"]]
        self.labels, self.tasks, self.ids = (state[k].tolist() for k in ("labels", "tasks", "ids"))


@register_strategy("rehearsal")
class Rehearsal(Strategy):
    description = "experience replay: a buffer of earlier tasks' samples mixed into every batch"

    class Params(StrategyParams):
        buffer_size: int = Field(500, ge=0, description="samples kept in all (summed over workers)")
        policy: Literal["reservoir", "class_balanced", "task_balanced"] = "reservoir"
        replay_fraction: float = Field(0.5, ge=0, lt=1, description="share of replayed samples in each combined batch")

    def __init__(self, params=None):
        super().__init__(params)
        self.buffer = ReplayBuffer(self.params.buffer_size, self.params.policy)

    def setup(self, ctx) -> None:
        self.buffer = ReplayBuffer(shard_capacity(self.params.buffer_size, ctx.rank, ctx.world_size), self.params.policy)

    def loss(self, ctx, batch) -> dict[str, torch.Tensor]:
        f = self.params.replay_fraction
        n = round(len(batch) * f / (1 - f))
        if n and len(self.buffer):
            rng = ctx.rng("replay", ctx.step)
            batch = concat([batch, self.buffer.sample(ctx, n, rng)])
        ce = ctx.task_loss(batch)
        return {"loss": ce, "ce": ce}

    def after_stage(self, ctx) -> None:
        rng = ctx.rng("buffer")
        for task in ctx.stage.train_tasks:
            split = ctx.tasks[task].split("train")
            for i in rng.permutation(np.arange(ctx.rank, len(split), ctx.world_size)):
                self.buffer.offer(split.images[i], int(split.labels[i]), task, int(i), rng)

    def extra_metrics(self, ctx) -> dict[str, float]:
        totals = torch.tensor([len(self.buffer), self.buffer.nbytes], dtype=torch.int64, device=ctx.device)
        if ctx.world_size > 1:
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return {"buffer_samples": int(totals[0]), "buffer_bytes": int(totals[1])}

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.buffer.load_state_dict(state["buffer"])
