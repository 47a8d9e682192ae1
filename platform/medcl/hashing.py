"""File digests for manifests (checkpoints, corpus, embedding and index shards). Torch-free, so
light processes such as retrieval shard actors can verify files without importing torch."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (a local path or a :class:`medcl.storage.Location`), read in 1 MiB chunks."""
    from medcl import storage

    digest = hashlib.sha256()
    with storage.open_input(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
