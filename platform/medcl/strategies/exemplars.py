"""iCaRL's exemplar memory: herding selection, a class-balanced budget, replay batches, class means.

Herding (Rebuffi et al., CVPR 2017, Algorithm 4), on the L2-normalised features phi(x) of a class's
n training samples, mu = (1/n) sum_i phi(x_i):

    p_k = argmin over x not yet chosen of || mu - (1/k) (phi(x) + sum_{j<k} phi(p_j)) ||,  k = 1..m

so the exemplars come in priority order and the first m' of them are the herding choice for m'.
Budget (Algorithm 3 and 5): with K = ``buffer_size`` and C classes seen so far (a class is a
(task, label) pair), every class keeps m = floor(K / C) exemplars: the old classes drop all but
their first m, each new class gets m by herding (fewer if it has fewer samples). The K mod C slots
left over stay empty, as in iCaRL.

The memory stores indices into the tasks' training splits (task, label, sample index), not pixels:
replay reads the uint8 images back from ``ctx.tasks`` (``nbytes`` counts what the pixels would
take). Every rank holds the same memory: the features are encoded in whole batches shared by the
ranks and all-gathered (:mod:`medcl.engine.chunks`), so every rank runs herding on the numbers one
process computes, and herding's arg-min does not change with the number of workers.
"""
from __future__ import annotations

import numpy as np
import torch

from medcl.engine.chunks import gather_chunks, rank_chunks
from medcl.models.norm import eval_mode
from medcl.strategies.common import concat


def herding(features: torch.Tensor, m: int) -> list[int]:
    """Row indices of ``features`` (n, D), already L2-normalised, chosen by herding, in order (at most n)."""
    features = features.double()
    mu = features.mean(dim=0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(features), dtype=torch.bool)
    for k in range(1, min(m, len(features)) + 1):
        distance = (mu - (features + running) / k).norm(dim=1)
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        chosen.append(pick)
        available[pick] = False
        running = running + features[pick]
    return chosen


@torch.no_grad()
def task_features(ctx, model: torch.nn.Module, task: int, batch_size: int = 64) -> torch.Tensor:
    """Normalised image features (n, D) of every training sample of ``task`` (eval mode), the same on
    every rank and equal to one process's (:mod:`medcl.engine.chunks`)."""
    split = ctx.tasks[task].split("train")
    parts = []
    with eval_mode(model):
        for rows in rank_chunks(len(split), batch_size, ctx.rank, ctx.world_size):
            parts.append(model.encode_image(ctx.preprocess(split.images[rows]), normalize=True).float())
        if not parts:  # fewer chunks than ranks: an empty shard of the right width
            parts.append(model.encode_image(ctx.preprocess(split.images[:1]), normalize=True).float()[:0])
    return gather_chunks(torch.cat(parts), len(split), batch_size, ctx.world_size).cpu()


class ExemplarMemory:
    """Per class (task, label): training-sample indices in herding order; ``buffer_size`` in all."""

    def __init__(self, buffer_size: int):
        self.buffer_size = buffer_size
        self.classes: dict[tuple[int, int], list[int]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.classes.values())

    def items(self) -> list[tuple[int, int, int]]:
        """(task, label, sample index) of every exemplar, classes in insertion order."""
        return [(t, c, i) for (t, c), indices in self.classes.items() for i in indices]

    def per_class(self, new_classes: int) -> int:
        """m = floor(buffer_size / (classes kept + ``new_classes``))."""
        total = len(self.classes) + new_classes
        return self.buffer_size // total if total else 0

    def add_task(self, task: int, labels: np.ndarray, features: torch.Tensor) -> None:
        """Shrink every kept class to m, then herd m exemplars of each class of ``task``."""
        new = sorted({int(c) for c in labels} - {c for t, c in self.classes if t == task})
        m = self.per_class(len(new))
        for key in self.classes:
            self.classes[key] = self.classes[key][:m]
        for c in new:
            rows = np.flatnonzero(labels == c)
            self.classes[(task, c)] = [int(rows[j]) for j in herding(features[rows], m)]

    def nbytes(self, ctx) -> int:
        return sum(ctx.tasks[t].split("train").images[i].nbytes for t, _, i in self.items())

    def batch(self, ctx, n: int, rng: np.random.Generator):
        """A model-ready batch of ``min(n, len)`` distinct exemplars (grouped by stored image shape)."""
        items = self.items()
        picks = [items[j] for j in rng.choice(len(items), size=min(n, len(items)), replace=False)]
        return self.make_batch(ctx, picks)

    @staticmethod
    def make_batch(ctx, picks: list[tuple[int, int, int]]):
        images = [ctx.tasks[t].split("train").images[i] for t, _, i in picks]
        parts = []
        for shape in sorted({image.shape for image in images}):
            rows = [j for j, image in enumerate(images) if image.shape == shape]
            parts.append(ctx.make_batch(np.stack([images[j] for j in rows]), np.array([picks[j][1] for j in rows]),
                                        np.array([picks[j][0] for j in rows])))
        return concat(parts)

    @torch.no_grad()
    def class_means(self, ctx, model: torch.nn.Module, task: int) -> torch.Tensor | None:
        """(C, D) normalised means of the normalised exemplar features of ``task``'s classes under
        ``model`` (iCaRL's mu_y); None unless every class of the task has an exemplar."""
        keys = [(task, c) for c in range(len(ctx.tasks[task].classes))]
        if not all(self.classes.get(key) for key in keys):
            return None
        means = []
        with eval_mode(model):
            for key in keys:
                batch = self.make_batch(ctx, [(key[0], key[1], i) for i in self.classes[key]])
                features = model.encode_image(batch.images, normalize=True).float()
                means.append(torch.nn.functional.normalize(features.mean(dim=0), dim=0))
        return torch.stack(means)

    def state_dict(self) -> dict:
        items = self.items()
        return {"buffer_size": self.buffer_size,
                "classes": torch.tensor([[t, c] for t, c in self.classes], dtype=torch.int64).reshape(-1, 2),
                "items": torch.tensor(items, dtype=torch.int64).reshape(-1, 3)}

    def load_state_dict(self, state: dict) -> None:
        if int(state["buffer_size"]) != self.buffer_size:
            raise ValueError(f"the checkpoint's exemplar memory has buffer_size {int(state['buffer_size'])}, this run "
                             f"{self.buffer_size}: restore strategy.buffer_size or start over with --fresh")
        self.classes = {(int(t), int(c)): [] for t, c in state["classes"].tolist()}
        for t, c, i in state["items"].tolist():
            self.classes[(t, c)].append(i)
