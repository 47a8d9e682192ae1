"""Deterministic, sharded training batches for one stage.

The global batch of step ``s`` is the ``s``-th run of ``batch_size`` indices through a sequence of
seeded permutations of the stage's pooled training samples (one permutation per epoch, seeded by
``(seed, stage, epoch)``); rank ``r`` of ``w`` takes rows ``r::w`` of it. So the data seen per step
do not depend on the number of workers, and a resumed stage replays exactly the same batches.
:func:`sharded_rows` is that scheme alone; pretraining's pairs (``medcl.pretrain.data``) and
PRIMED's reference stream (``medcl.primed.stream``) draw through it too.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

from medcl.data.task import Task
from medcl.engine.taskrefs import split_size


def sharded_rows(step: int, batch_size: int, n: int, permutation: Callable[[int], np.ndarray], *,
                 rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Rank ``rank``'s rows of global step ``step``: positions ``step * batch_size`` onwards through
    ``permutation(epoch)`` (a permutation of ``range(n)`` per pass over the ``n`` rows), taking
    every ``world_size``-th position from ``rank``."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)[rank::world_size]
    rows = np.empty(len(positions), dtype=np.int64)
    for epoch in np.unique(positions // n):
        mask = positions // n == epoch
        rows[mask] = permutation(int(epoch))[positions[mask] % n]
    return rows


class StageSampler:
    def __init__(self, tasks: list[Task], train_tasks: tuple[int, ...], *, batch_size: int, seed: int,
                 stage_index: int, rank: int = 0, world_size: int = 1):
        self.tasks, self.batch_size = tasks, batch_size
        self.seed, self.stage_index, self.rank, self.world_size = seed, stage_index, rank, world_size
        sizes = [split_size(tasks[t], "train") for t in train_tasks]
        if not sum(sizes):
            raise ValueError(f"stage {stage_index} has no training samples")
        self.task_of = np.concatenate([np.full(n, t, dtype=np.int64) for t, n in zip(train_tasks, sizes)])
        self.local_index = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])

    def __len__(self) -> int:
        return len(self.task_of)

    def steps_for(self, steps: int | None, epochs: float | None) -> int:
        """``steps`` if given, else ``ceil(epochs * N / batch_size)``."""
        return steps if steps is not None else max(1, math.ceil(epochs * len(self) / self.batch_size))

    def batches(self, num_steps: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield this rank's ``(images uint8 NHWC, labels, task_ids)`` for steps start..num_steps-1."""
        for step in range(start_step, num_steps):
            yield self._gather(sharded_rows(step, self.batch_size, len(self), self._permutation, rank=self.rank,
                                            world_size=self.world_size))

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.stage_index, epoch]).permutation(len(self))

    def _gather(self, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        task_ids = self.task_of[pooled]
        local = self.local_index[pooled]
        images, labels = [], []
        order = np.argsort(task_ids, kind="stable")
        for task_id in np.unique(task_ids):
            rows = local[order][task_ids[order] == task_id]
            split = self.tasks[task_id].split("train")
            imgs = split.images[rows]
            images.append(imgs)
            labels.append(split.labels[rows])
        return _stack_images(images), np.concatenate(labels), task_ids[order]


def _stack_images(images: list[np.ndarray]) -> np.ndarray:
    if len(images) == 1:
        return images[0]
    images = [img if img.shape[-1] == 3 else np.repeat(img, 3, axis=-1) for img in images]
    size = max(img.shape[1] for img in images)
    if any(img.shape[1:3] != (size, size) for img in images):
        raise ValueError("a multi-task stage needs tasks of one image size; set the benchmark's image size")
    return np.concatenate(images)
