"""One Arrow schema for every corpus source (ROCO, MedPix, JSONL, Parquet, WebDataset).

A corpus build writes Parquet shards with exactly these columns; ``image`` holds the encoded file
bytes (PNG/JPEG as found) or null for caption-only entries such as ROCO's, ``id`` is unique within a
corpus and prefixed by the source (``roco:ROCO_00002``).
"""
from __future__ import annotations

import pyarrow as pa

CORPUS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("image", pa.binary(), nullable=True),
    pa.field("caption", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("license", pa.string(), nullable=False),
])
CORPUS_COLUMNS = tuple(CORPUS_SCHEMA.names)


class CorruptArtifactError(RuntimeError):
    """A corpus, embedding or index file whose sha256 does not match its manifest (or is missing)."""
