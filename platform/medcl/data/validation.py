"""Validation splits for tuning: a run with ``train.eval_split: val`` is scored on these, never on test.

For each task: its own ``val`` split when the benchmark gives one (synthmed's ``val_per_class``, a
prepared data set's ``val`` rows); otherwise ``val_fraction`` of its train split, carved off and
removed from training, the same rows for the same ``seed``::

    rows  = permutation of 0..N-1 by numpy's default_rng([seed, crc32(task name)])
    val   = rows[:n_val],  train = rows[n_val:],  n_val = max(1, round(val_fraction * N))   (N >= 2)

The draw does not depend on the task's place in the order, so every order carves the same rows.
"""
from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from medcl.data.task import Split, Task


def with_validation(tasks: list[Task], *, fraction: float, seed: int) -> list[Task]:
    """``tasks`` each with a non-empty ``val`` split (see the module doc); ``ValueError`` names a
    task whose train split is too small to carve one from."""
    return [task if _has_val(task) else _carve(task, fraction, seed) for task in tasks]


def _has_val(task: Task) -> bool:
    return "val" in task.splits and len(task.splits["val"]) > 0


def _carve(task: Task, fraction: float, seed: int) -> Task:
    train = task.split("train")
    n = len(train)
    if n < 2:
        raise ValueError(f"task {task.name!r}: its train split has {n} image(s), too few to carve a validation "
                         "split from; give the benchmark a val split or use train.eval_split: test")
    n_val = min(n - 1, max(1, round(fraction * n)))
    rows = np.random.default_rng([seed, zlib.crc32(task.name.encode())]).permutation(n)
    val_rows, train_rows = np.sort(rows[:n_val]), np.sort(rows[n_val:])
    splits = {**task.splits, "train": _take(train, train_rows), "val": _take(train, val_rows)}
    return dataclasses.replace(task, splits=splits)


def _take(split: Split, rows: np.ndarray) -> Split:
    captions = None if split.captions is None else tuple(split.captions[i] for i in rows)
    return Split(images=split.images[rows], labels=split.labels[rows], captions=captions)
