"""Whole directories of :mod:`medcl.storage` places on local disk: node cache and write staging.

* :func:`cached_dir` gives a local copy of a directory place (an index directory in ``s3://``...),
  downloaded **once per node** into the node's cache (``$MEDCL_CACHE``, default
  ``~/.cache/medcl/objects``, as :func:`medcl.storage.cached_file`). The copy is named by the URI
  and the sha256 of the directory's key file (``index.json`` for an index), so a rebuilt directory
  is fetched again; it is downloaded into a temporary folder beside it and renamed into place, so
  several processes of a node (shard actors, Train workers) reading it at once see a whole copy or
  none, and all but the first rename reuse the winner's copy. A local path is returned as it is.
* :func:`scratch_dir` gives a local folder to write a directory place's files in: the place itself
  when local, else an empty temporary folder uploaded into the place when the block finishes
  without an exception (nothing is downloaded first, unlike :func:`medcl.storage.staged_dir`, so
  parallel writers of one place, such as index fill tasks on several nodes, each add their files).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from medcl.confine import rmtree_below
from medcl import storage


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The node's cache folder: ``cache_dir``, else ``$MEDCL_CACHE``, else ``~/.cache/medcl/objects``."""
    return Path(cache_dir or os.environ.get("MEDCL_CACHE") or Path.home() / ".cache" / "medcl" / "objects")


def cached_dir(value, key_file: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local directory holding the files of the directory place ``value`` (see the module doc).

    ``key_file`` (a file name in the directory) must exist; its content's sha256 keys the copy.
    FileNotFoundError names the place and the key file when it is missing.
    """
    where = storage.place(value)
    if isinstance(where, Path):
        return where
    try:
        key_bytes = storage.read_bytes(where / key_file)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no {key_file}") from None
    digest = hashlib.sha256(key_bytes).hexdigest()[:16]
    uri_key = hashlib.sha256(where.uri.encode()).hexdigest()[:8]
    root = cache_root(cache_dir)
    target = root / f"{uri_key}-{digest}-{where.name}"
    if (target / key_file).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        storage.download_dir(where, partial)
        if (partial / key_file).read_bytes() != key_bytes:
            raise storage.StorageError(f"{where}: {key_file} changed during the download; load it again")
        try:
            os.rename(partial, target)
        except OSError:  # another process of this node renamed its copy first: use that one
            if not (target / key_file).is_file():
                raise
    finally:
        rmtree_below(partial, root, ignore_errors=True)
    return target


@contextlib.contextmanager
def scratch_dir(value) -> Iterator[Path]:
    """A local folder whose files end up in the directory place ``value`` (see the module doc)."""
    where = storage.place(value)
    if isinstance(where, Path):
        where.mkdir(parents=True, exist_ok=True)
        yield where
        return
    with tempfile.TemporaryDirectory(prefix="medcl-scratch-") as tmp:
        yield Path(tmp)
        storage.upload_dir(tmp, where)
