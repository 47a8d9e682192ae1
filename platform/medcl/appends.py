"""Append-only text files (a run's ``events.jsonl``) on local disk and on object stores.

An object store has no append: each :func:`append_text` there writes one new object
``<name>.d/<writer>-<n>.part``, so nothing already written is ever rewritten, and
:func:`read_appended` reads the plain object (if any) and then every part in name order. Local
files are appended to in place. Everything else about places is :mod:`medcl.storage`.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

from medcl import storage
from medcl.storage import Location, place

APPEND_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # waits between the tries of one object-store append
PARTS_SUFFIX = ".d"  # the parts of an appended object-store file <name> are <name>.d/<writer>-<n>.part
_part_writers: dict[str, list] = {}  # URI -> [this process's writer prefix, parts written so far]


def append_text(value, text: str, encoding: str = "utf-8") -> None:
    """Append ``text``: a plain append to a local file; on an object store (which has no append)
    one new object per call, ``<name>.d/<writer>-<n>.part``, where ``<writer>`` is this process's
    first-append time (ns, zero-padded) and a random id and ``n`` counts its parts, so names sort in
    writing order and nothing already written is ever rewritten. A failed PUT (``OSError``: network,
    throttling, 5xx) is tried again after each of :data:`APPEND_BACKOFF_S`; the last error is raised.
    :func:`read_appended` reads the file back."""
    where = place(value)
    if isinstance(where, Path):
        with open(where, "a", encoding=encoding) as handle:
            handle.write(text)
        return
    writer = _part_writers.setdefault(where.uri, [f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", 0])
    target = parts_of(where) / f"{writer[0]}-{writer[1]:08d}.part"
    data = text.encode(encoding)
    for wait in (*APPEND_BACKOFF_S, None):
        try:
            storage.write_bytes(target, data)
            break
        except FileNotFoundError:
            raise
        except OSError:
            if wait is None:
                raise
            time.sleep(wait)
    writer[1] += 1


def parts_of(value) -> Location:
    """The folder holding the appended parts of the object-store file ``value``."""
    where = place(value)
    return where.parent / f"{where.name}{PARTS_SUFFIX}"


def read_appended(value, encoding: str = "utf-8") -> str:
    """The whole text of a file written with :func:`append_text`: the local file; on an object
    store the plain object, if any (written by medcl before parts), then every part in name order.
    ``""`` when nothing was written."""
    where = place(value)
    if isinstance(where, Path):
        return where.read_text(encoding) if where.is_file() else ""
    text = storage.read_text(where, encoding) if storage.is_file(where) else ""
    parts = parts_of(where)
    return text + "".join(storage.read_text(parts / name, encoding) for name in storage.listdir(parts) if name.endswith(".part"))


def appended_exists(value) -> bool:
    """Whether anything was written with :func:`append_text` at ``value``."""
    where = place(value)
    return where.is_file() if isinstance(where, Path) else storage.is_file(where) or bool(storage.listdir(parts_of(where)))
