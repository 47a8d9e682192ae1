"""Worker side: one task's planned reference set, and the rows of it each step draws.

The global reference batch of step s is the s-th run of ``batch_size`` positions through seeded
permutations of the set (one per pass, each from ``ctx.rng("reference", pass, shared=True)``: the
same on every rank); rank r of w takes positions r::w of it (:func:`reference_rows`, the engine's
:func:`medcl.engine.sampling.sharded_rows`, as for the task's data), so what a step sees does not
depend on the number of workers and a resumed task replays it exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from medcl import storage
from medcl.data.pairs import ImageCaptions
from medcl.data.reference import _decode
from medcl.engine.sampling import sharded_rows
from medcl.primed.planner import reference_file


def read_reference_set(plan_dir: str | Path, index: int, image_size: int) -> ImageCaptions:
    """Task ``index``'s planned pairs, images decoded at ``image_size`` (a local plan or one in an
    object store, :mod:`medcl.storage`)."""
    path = reference_file(plan_dir, index)
    if not storage.is_file(path):
        raise FileNotFoundError(f"{path}: PRIMED's reference set for task {index} was not planned; "
                                "the driver plans it in Primed.prepare (medcl run does this)")
    filesystem, in_filesystem = storage.resolve(path)
    table = pq.read_table(in_filesystem, columns=["image", "caption"], filesystem=filesystem)
    images = [_decode(b, image_size) for b in table["image"].to_pylist()]
    return ImageCaptions(np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8),
                         tuple(table["caption"].to_pylist()))


def reference_rows(step: int, batch_size: int, n: int, pass_rng: Callable[[int], np.random.Generator], *,
                   rank: int = 0, world: int = 1) -> np.ndarray:
    """This rank's rows of a set of ``n`` pairs for global step ``step``; ``pass_rng(p)``: the
    generator of pass ``p``'s permutation, the same on every rank."""
    return sharded_rows(step, batch_size, n, lambda p: pass_rng(p).permutation(n), rank=rank, world_size=world)
