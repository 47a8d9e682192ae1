"""Image-caption pairs of a synthmed build for pretraining, in memory, split into train and
held-out, plus the deterministic sharded batches every worker draws. (A corpus directory is not
loaded here: it streams through Ray Data, :mod:`medcl.pretrain.stream`.)

Images are RGB uint8 ``(N, S, S, 3)`` at ``data.image_size``, one caption per image. Batches
follow the engine's sampler scheme (:func:`medcl.engine.sampling.sharded_rows`): the global batch of
step ``s`` is the ``s``-th run of ``batch_size`` indices through seeded per-epoch permutations, and
rank ``r`` of ``w`` takes rows ``r::w``; so a resumed run replays exactly the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from medcl.data.pairs import ImageCaptions
from medcl.engine.sampling import sharded_rows
from medcl.pretrain.config import SynthmedData


@dataclass(frozen=True)
class PretrainData:
    train: ImageCaptions
    heldout: ImageCaptions
    stats: dict = field(default_factory=dict)  # rows read / used / skipped by reason


def steps_for(rows: int, batch_size: int, steps: int | None, epochs: float | None) -> int:
    """The run's step count: ``steps`` if given, else ``max(1, ceil(epochs * rows / batch_size))``
    (``rows``: training pairs; ``batch_size``: global)."""
    return steps if steps is not None else max(1, int(np.ceil(epochs * rows / batch_size)))


def load_pairs(data: SynthmedData) -> PretrainData:
    """The synthmed pairs of ``data``, in memory."""
    return _synthmed(data)


def _rgb(images: np.ndarray) -> np.ndarray:
    return images if images.shape[-1] == 3 else np.repeat(images, 3, axis=-1)


def _synthmed(data: SynthmedData) -> PretrainData:
    from medcl.data.synthmed import DOMAIN_NAMES, SynthMed, captioned_pairs

    options = {"domains": data.domains or list(DOMAIN_NAMES), "train_per_class": data.per_class,
               "val_per_class": 1, "test_per_class": data.heldout_per_class, "image_size": data.image_size}
    tasks = SynthMed().build(options, data.seed)

    def pairs(split: str) -> ImageCaptions:
        rows = list(captioned_pairs(tasks, split))
        return ImageCaptions(np.stack([_rgb(r["image"]) for r in rows]), tuple(r["caption"] for r in rows))

    train, heldout = pairs("train"), pairs("test")
    return PretrainData(train, heldout, {"source": "synthmed", "seed": data.seed, "rows": len(train) + len(heldout),
                                         "train": len(train), "heldout": len(heldout), "skipped": {}})


class PairSampler:
    """This rank's share of each global batch (see the module docstring)."""

    def __init__(self, pairs: ImageCaptions, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if not len(pairs):
            raise ValueError("no training pairs")
        self.pairs, self.batch_size, self.seed, self.rank, self.world_size = pairs, batch_size, seed, rank, world_size

    def steps_for(self, steps: int | None, epochs: float | None) -> int:
        """:func:`steps_for` this sampler's pairs."""
        return steps_for(len(self.pairs), self.batch_size, steps, epochs)

    def indices(self, step: int) -> np.ndarray:
        n = len(self.pairs)
        permutation = lambda epoch: np.random.default_rng([self.seed, epoch]).permutation(n)  # noqa: E731
        return sharded_rows(step, self.batch_size, n, permutation, rank=self.rank, world_size=self.world_size)

    def batches(self, num_steps: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, list[str]]]:
        for step in range(start_step, num_steps):
            idx = self.indices(step)
            yield self.pairs.images[idx], [self.pairs.captions[i] for i in idx]
