"""What the driver of a corpus pretraining reads: Parquet footers and the held-out rows, never the training images.

A corpus directory (``data.path``, ``medcl corpus build``; its current version, :mod:`medcl.publish`)
is the shards its ``manifest.json`` lists, in that order, one row sequence (each shard's sha256 is
checked here first, and a ``*.parquet`` file the manifest does not list is refused by name);
``data.limit`` keeps its first rows. :func:`plan_corpus` returns a :class:`CorpusPlan`:

* ``rows = min(sum of the shards' row counts, data.limit)``, from the footers (no data read);
* ``caption_only``: rows of those whose ``image`` is null, summed from the row groups' null counts
  (Parquet statistics; a row group without them, or the one the limit cuts, reads its ``image``
  column, one batch at a time);
* the held-out pairs: positions drawn from ``range(rows)`` by ``numpy.random.default_rng(data.seed)``
  without replacement, in rounds of growing size (each round's new positions in draw order) are
  read, only the row groups holding them, 1,024 rows at a time, until ``data.heldout`` rows have a
  decodable image. Those ``data.heldout`` pairs are held in memory (a fixed, small number) and
  their ids are kept out of the training stream (:mod:`medcl.pretrain.stream`);
* ``train_rows = rows - caption_only - heldout``: the rows ``train.epochs`` is counted in. Rows whose
  image does not decode are found only when the stream decodes them, so they are included here.

The driver's memory is thus the footers, ``heldout`` images and the held-out ids, whatever the corpus size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcl.data.pairs import ImageCaptions
from medcl.pretrain.config import CorpusData, PretrainConfigError

READ_BATCH_ROWS = 1024


@dataclass(frozen=True)
class CorpusPlan:
    files: tuple[str, ...]
    rows: int
    caption_only: int
    heldout: ImageCaptions
    heldout_ids: frozenset[str]

    @property
    def train_rows(self) -> int:
        return self.rows - self.caption_only - len(self.heldout)


@dataclass(frozen=True)
class _RowGroup:
    file: str
    index: int
    start: int  # global position of its first row
    rows: int   # rows of it within the limit


def corpus_files(data: CorpusData) -> list[str]:
    """The shards ``manifest.json`` lists, in its order, of the corpus version ``data.path`` names
    (:func:`medcl.publish.resolve`), each checked against its recorded sha256; PretrainConfigError
    naming ``data.path`` when there is no manifest or no shard, CorruptArtifactError naming a shard
    that is missing or altered, or a ``*.parquet`` file the manifest does not list (a leftover of
    a failed build is never trained on)."""
    from medcl import publish
    from medcl.corpus.schema import CorruptArtifactError
    from medcl.corpus.store import CORPUS_MANIFEST, read_corpus_manifest

    root = publish.resolve(Path(data.path))
    if not (root / CORPUS_MANIFEST).is_file():
        raise PretrainConfigError(str(data.path), [("data.path", f"no {CORPUS_MANIFEST} here; build a corpus with "
                                                    "`medcl corpus build SPEC --out DIR`, or use data: {source: synthmed}")])
    manifest = read_corpus_manifest(root, verify=False)
    if not manifest.shards:
        raise PretrainConfigError(str(data.path), [("data.path", f"{CORPUS_MANIFEST} lists no Parquet shards")])
    listed = {s.file for s in manifest.shards}
    leftovers = sorted(p.name for p in root.glob("*.parquet") if p.name not in listed)
    if leftovers:
        raise CorruptArtifactError(f"{root / leftovers[0]}: not listed in {CORPUS_MANIFEST} (a leftover of another "
                                   f"build?); not training on it: remove it or rebuild the corpus")
    read_corpus_manifest(root, verify=True)  # sha256 of every listed shard: what is trained on is what was built
    return [str(root / s.file) for s in manifest.shards]


def plan_corpus(data: CorpusData) -> CorpusPlan:
    """The plan of ``data`` (module docstring)."""
    files = corpus_files(data)
    groups = _row_groups(files, data.limit)
    rows = sum(g.rows for g in groups)
    caption_only = sum(_nulls(g) for g in groups)
    heldout, ids = _draw_heldout(groups, rows, data)
    if rows - caption_only - len(ids) < 1:
        raise PretrainConfigError(str(data.path), [("data.path", f"{rows} rows, {caption_only} without an image: "
                                                    f"nothing left to train on after data.heldout={data.heldout}")])
    return CorpusPlan(tuple(files), rows, caption_only, heldout, frozenset(ids))


def _row_groups(files: list[str], limit: int | None) -> list[_RowGroup]:
    import pyarrow.parquet as pq

    groups, start = [], 0
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        for index in range(metadata.num_row_groups):
            take = metadata.row_group(index).num_rows
            if limit is not None:
                take = min(take, limit - start)
            if take <= 0:
                return groups
            groups.append(_RowGroup(file, index, start, take))
            start += take
    return groups


def _image_column(file: str) -> int:
    import pyarrow.parquet as pq

    names = pq.ParquetFile(file).schema_arrow.names
    if "image" not in names:
        raise PretrainConfigError(file, [("data.path", f"no 'image' column (columns: {names}); not a corpus shard")])
    return names.index("image")


def _nulls(group: _RowGroup) -> int:
    """Null images in the group's first ``rows`` rows: its statistics when whole, else read."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(group.file)
    column = parquet.metadata.row_group(group.index).column(_image_column(group.file))
    whole = group.rows == parquet.metadata.row_group(group.index).num_rows
    stats = column.statistics
    if whole and stats is not None and stats.has_null_count:
        return int(stats.null_count)
    nulls, seen = 0, 0
    for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[group.index], columns=["image"]):
        part = batch.column(0).slice(0, group.rows - seen)
        nulls, seen = nulls + part.null_count, seen + len(part)
        if seen >= group.rows:
            break
    return nulls


def _draw_heldout(groups: list[_RowGroup], rows: int, data: CorpusData) -> tuple[ImageCaptions, list[str]]:
    """The first ``data.heldout`` rows with a decodable image, in draw order (module docstring).
    Rounds start at ``2 * heldout`` positions and grow 4x, so a corpus where images are rare makes
    the driver read more rows (all of them at worst), never more than one batch of them at a time."""
    rng = np.random.default_rng(data.seed)
    examined: set[int] = set()
    images, captions, ids = [], [], []
    size = min(rows, 2 * data.heldout)
    while len(ids) < data.heldout:
        drawn = [int(p) for p in rng.choice(rows, size=size, replace=False) if int(p) not in examined]
        examined.update(drawn)
        rows_read = _read_positions(groups, drawn, data.image_size)
        for position in drawn:
            image, caption, row_id = rows_read[position]
            if image is not None and len(ids) < data.heldout:
                images.append(image)
                captions.append(caption)
                ids.append(row_id)
        if size == rows:
            break
        size = min(rows, size * 4)
    if len(ids) < data.heldout:
        raise PretrainConfigError(str(data.path), [("data.heldout", f"only {len(ids)} of {rows} rows have a decodable "
                                                    f"image; data.heldout={data.heldout} needs more")])
    return ImageCaptions(np.stack(images), tuple(captions)), ids


def _read_positions(groups: list[_RowGroup], positions: list[int],
                    image_size: int) -> dict[int, tuple[np.ndarray | None, str, str]]:
    """``position -> (image decoded as the stream decodes it, or None: no image or undecodable;
    caption; id)``, reading only the row groups holding them."""
    import pyarrow.parquet as pq

    starts = np.array([g.start for g in groups])
    wanted: dict[int, list[int]] = {}
    for position in positions:
        wanted.setdefault(int(np.searchsorted(starts, position, side="right")) - 1, []).append(position)
    found = {}
    for group_index, group_positions in wanted.items():
        group = groups[group_index]
        offsets = {p - group.start: p for p in group_positions}
        batches = pq.ParquetFile(group.file).iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[group.index],
                                                          columns=["id", "image", "caption"])
        for number, batch in enumerate(batches):
            first = number * READ_BATCH_ROWS
            for offset in [o for o in offsets if first <= o < first + len(batch)]:
                row = batch.slice(offset - first, 1).to_pylist()[0]
                found[offsets[offset]] = (_decoded(row["image"], image_size), str(row["caption"]), str(row["id"]))
    return found


def _decoded(blob: bytes | None, image_size: int) -> np.ndarray | None:
    from medcl.corpus.embed_prep import decode_images
    from medcl.data.images import UndecodableImage

    if blob is None:
        return None
    try:
        return decode_images([blob], image_size)[0]
    except UndecodableImage:
        return None
