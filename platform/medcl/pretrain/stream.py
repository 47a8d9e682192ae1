"""The training stream of a corpus pretraining: Ray Data reads and decodes, Ray Train shards it.

The driver only builds the plan (lazily: nothing is read or decoded in its process)::

    read_parquet(shards, shuffle=FileShuffleConfig(seed))   Ray Data read tasks; the shards in a
      .select_columns([id, image, caption])                  seeded order, another each pass
      .limit(data.limit)                                     when set (see below)
      .map_batches(decode_rows)                              CPU tasks: drop caption-only and held-out
                                                             rows, decode + centre-crop to image_size
                                                             (embed_prep.decode_images, as corpus embed
                                                             and training decode), drop and record
                                                             undecodable rows
      -> rows {pixels: uint8 (S, S, 3), caption: str}

``TorchTrainer(datasets={"train": ds}, dataset_config=DataConfig(datasets_to_split=["train"]))``
splits it over the ``w`` workers (``streaming_split(w, equal=True)``: every rank gets as many rows
per pass; in Ray Train's local mode, the tests', ``get_dataset_shard`` is the dataset itself,
iterated in the calling process). Each worker iterates its shard (:class:`StreamBatches`): pass ``p`` is one
``iter_torch_batches(batch_size=B/w, drop_last=True, local_shuffle_buffer_size=max(1024, 4*B/w),
local_shuffle_seed=pass_seed(seed, p))``, and passes follow each other until the run's steps are
done. So a rank gets ``B/w`` rows per step and every rank the same number of steps per pass (the
global batch is ``B``, the gathered InfoNCE needs one shape per rank); a pass ends at its last full
batch (``floor(rows per rank / (B/w))`` steps), its remainder is not carried into the next pass.

Nothing in the pipeline waits for the whole corpus: the shard order is shuffled before reading
(not ``randomize_block_order``, an all-to-all step that would read every block before the first
batch), and rows are mixed by each worker's local shuffle buffer (at 224 px, 1,024 rows are ~150 MB).

``data.limit``: the plan (held-out rows, counts) uses the first ``limit`` rows in file order; the
stream takes ``limit`` rows with ``Dataset.limit``, which with parallel reads need not be exactly
those (held-out ids are excluded either way, so no held-out row is trained on).

Undecodable rows are recorded by id in a :class:`SkippedRows` actor (a set, so a task retried or a
later pass does not count a row twice); caption-only rows are counted from the Parquet statistics
(:mod:`medcl.pretrain.corpus_plan`).

What is reproducible: the shard order of pass ``p`` (seed and execution index) and the local
shuffle of pass ``p`` (``pass_seed``) given the blocks a rank receives. What is not: which blocks
reach which rank and in which order they arrive (Ray Data runs read and decode tasks in parallel
and ``streaming_split`` hands blocks to whichever rank asks first), so two runs with the same seed
see the same rows per pass but not in the same batches. On resume, the restored step, optimiser
and schedule are exact; the stream starts pass ``state.data_pass`` again from its beginning (the
rows of that pass seen before the kill are seen again, the pass's shard order is that of a first
execution) -- unlike the in-memory synthmed path, a resumed corpus run does not end with the
weights of an uninterrupted one.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import ray

from medcl.pretrain.config import CorpusData

STREAM_NAME = "train"
SHUFFLE_BATCHES, SHUFFLE_MIN_ROWS = 4, 1024  # local shuffle buffer: max(1024 rows, 4 of a rank's batches)


class SkippedRows:
    """A Ray actor (``ray.remote(SkippedRows)``): the ids of rows whose image did not decode."""

    def __init__(self):
        self.ids: set[str] = set()

    def record(self, ids: list[str]) -> int:
        self.ids.update(ids)
        return len(self.ids)

    def count(self) -> int:
        return len(self.ids)


def pass_seed(seed: int, pass_index: int) -> int:
    """The local shuffle seed of pass ``pass_index``: ``SeedSequence([seed, pass_index])``'s first word."""
    return int(np.random.SeedSequence([seed, pass_index]).generate_state(1)[0])


def decode_rows(batch, *, image_size: int, exclude: frozenset, skipped=None) -> dict[str, np.ndarray]:
    """One Ray Data batch (pyarrow ``id, image, caption``) -> ``{pixels: uint8 (n, S, S, 3), caption:
    str (n,)}`` of its rows with an image, not in ``exclude``, that decode; undecodable rows' ids are
    recorded in the ``skipped`` actor (when given)."""
    from medcl.data.images import UndecodableImage

    ids, blobs, captions = (batch.column(c).to_pylist() for c in ("id", "image", "caption"))
    keep = [i for i, (row_id, blob) in enumerate(zip(ids, blobs)) if blob is not None and row_id not in exclude]
    try:
        pixels, bad = _decode(blobs, keep, image_size), []
    except UndecodableImage:
        pixels, bad = _decode_each(blobs, keep, image_size)
    if bad:
        keep = [i for i in keep if i not in set(bad)]
        if skipped is not None:
            ray.get(skipped.record.remote([ids[i] for i in bad]))
    return {"pixels": pixels, "caption": np.array([str(captions[i]) for i in keep], dtype=object)}


def _decode(blobs: list, rows: list[int], image_size: int) -> np.ndarray:
    from medcl.corpus.embed_prep import decode_images

    if not rows:
        return np.zeros((0, image_size, image_size, 3), np.uint8)
    return decode_images([blobs[i] for i in rows], image_size)


def _decode_each(blobs: list, rows: list[int], image_size: int) -> tuple[np.ndarray, list[int]]:
    """Row by row after a batch failed: ``(decoded images, rows that did not decode)``."""
    from medcl.data.images import UndecodableImage

    images, bad = [], []
    for i in rows:
        try:
            images.append(_decode(blobs, [i], image_size))
        except UndecodableImage:
            bad.append(i)
    return (np.concatenate(images) if images else _decode(blobs, [], image_size)), bad


def training_dataset(files: tuple[str, ...], data: CorpusData, *, exclude: frozenset, seed: int, skipped=None):
    """The lazy Ray Data pipeline of the module docstring (Ray must be initialised)."""
    import ray.data
    from ray.data import FileShuffleConfig

    ds = ray.data.read_parquet(list(files), shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True))
    ds = ds.select_columns(["id", "image", "caption"])
    if data.limit is not None:
        ds = ds.limit(data.limit)
    ds = ds.map_batches(decode_rows, batch_format="pyarrow", zero_copy_batch=True,
                        fn_kwargs={"image_size": data.image_size, "exclude": exclude, "skipped": skipped})
    ds.context.enable_progress_bars = False  # this dataset's own context: no bars in the CLI's output
    return ds


def dataset_config():
    """Ray Train's ingestion settings: the ``train`` stream is split over the workers."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=[STREAM_NAME])


class StreamBatches:
    """A rank's batches from its shard (a ``DataIterator``, or a ``Dataset`` in Ray Train's local
    mode): ``(uint8 images (B/w, S, S, 3), captions)`` per step, pass after pass (module docstring).
    ``state`` (a ``PretrainState``) gets ``data_pass``, the pass the last step drew from."""

    def __init__(self, shard, *, local_batch_size: int, seed: int, state):
        self.shard, self.local_batch_size, self.seed, self.state = shard, local_batch_size, seed, state

    def batches(self, num_steps: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, list[str]]]:
        step = start_step
        while step < num_steps:
            drawn = 0
            for pixels, captions in self.one_pass(self.state.data_pass):
                yield pixels, captions
                step, drawn = step + 1, drawn + 1
                if step >= num_steps:
                    return
            if not drawn:
                raise RuntimeError(f"pass {self.state.data_pass} of the corpus stream gave no batch of "
                                   f"{self.local_batch_size} rows to this rank; lower train.batch_size or add rows")
            self.state.data_pass += 1

    def one_pass(self, pass_index: int) -> Iterator[tuple[np.ndarray, list[str]]]:
        """The full batches of one pass over this rank's shard."""
        for batch in self.shard.iter_torch_batches(
                batch_size=self.local_batch_size, drop_last=True, collate_fn=_collate_fn(),
                local_shuffle_buffer_size=max(SHUFFLE_MIN_ROWS, SHUFFLE_BATCHES * self.local_batch_size),
                local_shuffle_seed=pass_seed(self.seed, pass_index), device="cpu"):
            yield batch


def _collate_fn():
    from ray.data.collate_fn import NumpyBatchCollateFn

    class ImagesAndCaptions(NumpyBatchCollateFn):
        """A numpy batch -> ``(uint8 image tensor (n, S, S, 3), list of captions)``."""

        def __call__(self, batch: dict[str, np.ndarray]):
            import torch

            return torch.from_numpy(np.ascontiguousarray(batch["pixels"])), [str(c) for c in batch["caption"]]

    return ImagesAndCaptions()
