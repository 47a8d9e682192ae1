"""Image-caption pairs for pretraining: a synthmed build or a corpus directory, split into train
and held-out, plus the deterministic sharded batches every worker draws.

Both sources give RGB uint8 images ``(N, S, S, 3)`` at ``data.image_size`` and one caption per
image. Batches follow the engine's sampler scheme (:func:`medcl.engine.sampling.sharded_rows`): the global batch of
step ``s`` is the ``s``-th run of ``batch_size`` indices through seeded per-epoch permutations, and
rank ``r`` of ``w`` takes rows ``r::w``; so a resumed run replays exactly the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from medcl.data.pairs import ImageCaptions
from medcl.engine.sampling import sharded_rows
from medcl.pretrain.config import CorpusData, PretrainConfigError, SynthmedData


@dataclass(frozen=True)
class PretrainData:
    train: ImageCaptions
    heldout: ImageCaptions
    stats: dict = field(default_factory=dict)  # rows read / used / skipped by reason


def load_pairs(data: SynthmedData | CorpusData) -> PretrainData:
    if isinstance(data, SynthmedData):
        return _synthmed(data)
    return _corpus(data)


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


def _corpus(data: CorpusData) -> PretrainData:
    """Read ``*.parquet`` under ``data.path`` (name order); decode images; skip and count rows with
    no image (``caption_only``) or an undecodable one (``undecodable_image``)."""
    import pyarrow.parquet as pq

    from medcl.data.images import UndecodableImage, decode

    root = Path(data.path)
    files = sorted(root.glob("*.parquet")) if root.is_dir() else []
    if not files:
        raise PretrainConfigError(str(root), [("data.path", "no Parquet shards (*.parquet) here; build a corpus with "
                                               "`medcl corpus build SPEC --out DIR`, or use data: {source: synthmed}")])
    images, captions, skipped, read = [], [], {"caption_only": 0, "undecodable_image": 0}, 0
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(columns=["image", "caption"], batch_size=1024):
            for image, text in zip(batch.column("image").to_pylist(), batch.column("caption").to_pylist()):
                if data.limit is not None and read >= data.limit:
                    break
                read += 1
                if image is None:
                    skipped["caption_only"] += 1
                    continue
                try:
                    images.append(decode(image, image_size=data.image_size, channels=3))
                except UndecodableImage:
                    skipped["undecodable_image"] += 1
                    continue
                captions.append(str(text))
    if len(images) <= data.heldout:
        raise PretrainConfigError(str(root), [("data.path", f"{len(images)} rows with a readable image (skipped: "
                                               f"{skipped}); pretraining needs more than data.heldout={data.heldout}")])
    order = np.random.default_rng(data.seed).permutation(len(images))
    held, kept = np.sort(order[: data.heldout]), np.sort(order[data.heldout:])
    stack = np.stack(images)
    take = lambda idx: ImageCaptions(stack[idx], tuple(captions[i] for i in idx))  # noqa: E731
    return PretrainData(take(kept), take(held), {"source": "corpus", "path": str(root), "rows": read,
                                                 "train": len(kept), "heldout": len(held), "skipped": skipped})


class PairSampler:
    """This rank's share of each global batch (see the module docstring)."""

    def __init__(self, pairs: ImageCaptions, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if not len(pairs):
            raise ValueError("no training pairs")
        self.pairs, self.batch_size, self.seed, self.rank, self.world_size = pairs, batch_size, seed, rank, world_size

    def steps_for(self, steps: int | None, epochs: float | None) -> int:
        """``steps`` if given, else ``ceil(epochs * N / batch_size)``."""
        return steps if steps is not None else max(1, int(np.ceil(epochs * len(self.pairs) / self.batch_size)))

    def indices(self, step: int) -> np.ndarray:
        n = len(self.pairs)
        permutation = lambda epoch: np.random.default_rng([self.seed, epoch]).permutation(n)  # noqa: E731
        return sharded_rows(step, self.batch_size, n, permutation, rank=self.rank, world_size=self.world_size)

    def batches(self, num_steps: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, list[str]]]:
        for step in range(start_step, num_steps):
            idx = self.indices(step)
            yield self.pairs.images[idx], [self.pairs.captions[i] for i in idx]
