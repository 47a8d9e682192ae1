"""The Parquet manifest of prepared rows (see :mod:`medcl.data.prepare.core`)."""
from __future__ import annotations

import io
from pathlib import Path

BATCH_ROWS = 1024  # rows per record batch: embedded bytes are held one batch at a time


def write_manifest(rows: list[dict], path: Path, spec, *, embed: bool, max_side: int | None,
                   images_root: Path | None = None) -> int:
    """Write ``rows`` to ``path`` (one Parquet file, record batches of :data:`BATCH_ROWS`); return its size in bytes.

    Columns: ``path`` (the image's absolute path) or, with ``embed``, ``image`` (the file's bytes, or
    a PNG of it resized so that its longest side is at most ``max_side``); then ``label``,
    ``split``, ``task`` (the data set name), ``modality``, ``patient`` (strings). ``images_root``
    (the download folder) is recorded in the file's metadata as ``medcl.images_root``: the folder the
    ``parquet`` adapter lets ``path`` values resolve in (:mod:`medcl.data.parquet`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = ("image", pa.binary()) if embed else ("path", pa.string())
    schema = pa.schema([source, *((c, pa.string()) for c in ("label", "split", "task", "modality", "patient"))],
                       metadata={b"medcl.images_root": str(images_root).encode()} if images_root else None)
    tmp = path.with_suffix(".parquet.tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(rows), BATCH_ROWS):
            batch = rows[start : start + BATCH_ROWS]
            first = [_image_bytes(r["image"], max_side) for r in batch] if embed else [str(r["image"]) for r in batch]
            columns = [first, [r["label"] for r in batch], [r["split"] for r in batch], [spec.name] * len(batch),
                       [spec.modality] * len(batch), [str(r["patient"]) for r in batch]]
            writer.write_table(pa.Table.from_arrays([pa.array(c, type=t) for c, t in zip(columns, schema.types)],
                                                    schema=schema))
    tmp.replace(path)
    return path.stat().st_size


def _image_bytes(image: Path, max_side: int | None) -> bytes:
    """The file's bytes (checked by ``collect``), re-encoded through the checked opener when over ``max_side``."""
    from medcl.data.images import open_image

    data = image.read_bytes()
    if not max_side:
        return data
    with open_image(data) as img:
        if max(img.size) <= max_side:
            return data
        img.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return buffer.getvalue()
