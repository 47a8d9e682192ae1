"""Parquet files of corpus and embedding directories through :mod:`medcl.storage`.

A corpus or embedding directory is a *place* (a local path, a shared mount, or an object-store URI
such as ``s3://bucket/corpus``); these helpers read and write its Parquet files with the pyarrow
filesystem :func:`medcl.storage.resolve` gives, so the same call works for every kind of place::

    write_table(table, place("s3://bucket/corpus") / "part-00000.parquet")
    read_table("s3://bucket/corpus/part-00000.parquet", columns=["id"])
    paths, keywords = ray_parquet_source(store.paths)           # Ray Data on the same filesystem:
    ray.data.read_parquet(paths, **keywords)

Contracts: a path is a :class:`~pathlib.Path`, a :class:`~medcl.storage.Location` or a string
(a URI stays a URI); local parent directories are made before a write; a missing file raises
FileNotFoundError naming it.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from medcl import storage


def write_table(table: pa.Table, where) -> None:
    """Write ``table`` as one Parquet file at the place ``where`` (parents made when local)."""
    target = storage.place(where)
    storage.makedirs(target.parent)
    filesystem, path = storage.resolve(target)
    pq.write_table(table, path, filesystem=filesystem)


def read_table(where, columns: list[str] | None = None) -> pa.Table:
    """The Parquet file at ``where`` (only ``columns`` when given)."""
    filesystem, path = storage.resolve(where)
    try:
        return pq.read_table(path, columns=columns, filesystem=filesystem)
    except FileNotFoundError:
        raise FileNotFoundError(f"{storage.place(where)}: no such file") from None


def parquet_file(where) -> pq.ParquetFile:
    """A :class:`pyarrow.parquet.ParquetFile` over the file at ``where`` (for ``iter_batches``)."""
    filesystem, path = storage.resolve(where)
    return pq.ParquetFile(filesystem.open_input_file(path))


def ray_parquet_source(paths: list) -> tuple[list[str], dict]:
    """``(paths, keywords)`` for ``ray.data.read_parquet(paths, **keywords)``: the paths inside one
    filesystem and ``filesystem=`` that filesystem, so Ray Data's read tasks use medcl's (an object
    store's endpoint and credentials come from each node's environment). All paths must be in the
    same store: the local disk, or one bucket (ValueError naming two that differ otherwise)."""
    if not paths:
        return [], {}
    places = [storage.place(p) for p in paths]
    roots = {_store_root(p): p for p in places}
    if len(roots) > 1:
        first, second = list(roots.values())[:2]
        raise ValueError(f"corpus shards are in different stores: {first} and {second}")
    resolved = [storage.resolve(p) for p in places]
    return [path for _, path in resolved], {"filesystem": resolved[0][0]}


def _store_root(where) -> str:
    """``scheme://bucket`` of an object-store place, ``""`` for the local disk."""
    if isinstance(where, storage.Location):
        scheme, rest = where.uri.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}"
    return ""
