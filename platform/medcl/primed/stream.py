"""Worker side: one task's planned reference set as a deterministic, sharded stream of pairs.

The global reference batch of step s is the s-th run of ``batch_size`` positions through seeded
permutations of the set (one per pass, each from ``ctx.rng("reference", pass, shared=True)``: the
same on every rank); rank r of w takes
positions r::w of it (:func:`medcl.engine.sampling.sharded_rows`, as for the task's data), so
what a step sees does not depend on the number of workers and a resumed task replays it exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from medcl import storage
from medcl.data.reference import _decode
from medcl.engine.sampling import sharded_rows
from medcl.primed.planner import reference_file


class ReferenceStream:
    """``images`` uint8 (N, S, S, 3) and ``captions`` of task ``index``'s plan, decoded at ``image_size``."""

    def __init__(self, plan_dir: str | Path, index: int, image_size: int):
        path = reference_file(plan_dir, index)  # local, or in an object store (medcl.storage)
        if not storage.is_file(path):
            raise FileNotFoundError(f"{path}: PRIMED's reference set for task {index} was not planned; "
                                    "the driver plans it in Primed.prepare (medcl run does this)")
        filesystem, in_filesystem = storage.resolve(path)
        table = pq.read_table(in_filesystem, columns=["image", "caption"], filesystem=filesystem)
        self.captions = table["caption"].to_pylist()
        images = [_decode(b, image_size) for b in table["image"].to_pylist()]
        self.images = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)

    def __len__(self) -> int:
        return len(self.captions)

    def rows(self, step: int, batch_size: int, *, pass_rng: Callable[[int], np.random.Generator], rank: int = 0,
             world: int = 1) -> np.ndarray:
        """This rank's positions into the set for global step ``step``; ``pass_rng(p)``: the generator
        of pass ``p``'s permutation, the same on every rank."""
        n = len(self)
        return sharded_rows(step, batch_size, n, lambda p: pass_rng(p).permutation(n), rank=rank, world_size=world)
