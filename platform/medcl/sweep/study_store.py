"""Where a sweep's Optuna study lives, for every kind of ``output_dir``.

The study is read and written only by the sweep driver (the searcher asks and tells there; trials
never touch it), so it needs a database the driver reaches, not one every node sees:

* ``storage:`` set: that SQLAlchemy URL as given (``postgresql://user@host/db``, ``mysql://...``,
  or ``sqlite:////abs/path/study.db`` on the driver's disk). A database server is the choice for a
  study that must survive the driver's machine.
* ``output_dir`` local or a shared mount, no ``storage``: ``sqlite:///<output_dir>/<name>/study.db``.
* ``output_dir`` an object store (``s3://bucket/sweeps``), no ``storage``: SQLite cannot run on an
  object store, so the study is a *working copy* on the driver's disk,
  ``$MEDCL_CACHE/sweeps/<name>-<key>/study.db`` (default ``~/.cache/medcl/sweeps/...``; ``key``
  from the sweep's URI), that :func:`staged_study` downloads from ``<sweep_dir>/study.db`` when an
  invocation starts and uploads back when it ends (normally, on an error or Ctrl-C), then removes.
  The bucket thus holds the study next to the outputs and ``--resume`` works from any machine. A
  driver killed outright (SIGKILL, a lost machine) cannot upload: its working copy stays, and the
  next invocation on that machine continues from it (it says so); on another machine the study is
  the one uploaded last. Give ``storage:`` a database URL when that is not enough.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

STUDY_FILE = "study.db"


def staging_file(sweep_dir_uri: str, name: str) -> Path:
    """The driver-local working copy of the study of the sweep at ``sweep_dir_uri``."""
    root = Path(os.environ.get("MEDCL_CACHE") or Path.home() / ".cache" / "medcl")
    key = hashlib.sha256(sweep_dir_uri.encode()).hexdigest()[:12]
    return root / "sweeps" / f"{name}-{key}" / STUDY_FILE


def study_url(sweep) -> str:
    """The SQLAlchemy URL Optuna opens for ``sweep`` (a :class:`~medcl.sweep.config.SweepConfig`)."""
    from medcl.storage import Location

    if sweep.storage:
        return sweep.storage
    if isinstance(sweep.sweep_dir, Location):
        return f"sqlite:///{staging_file(str(sweep.sweep_dir), sweep.name)}"
    return f"sqlite:///{sweep.sweep_dir / STUDY_FILE}"


def is_staged(sweep) -> bool:
    """True when the study is a working copy of ``<sweep_dir>/study.db`` in an object store."""
    from medcl.storage import Location

    return not sweep.storage and isinstance(sweep.sweep_dir, Location)


@contextlib.contextmanager
def staged_study(sweep, log=print) -> Iterator[None]:
    """Around one sweep invocation: fetch the object-store study into the working copy before,
    upload it (and remove the copy) after, also when the block raises. Nothing for other studies."""
    if not is_staged(sweep):
        yield
        return
    from medcl import storage

    local, remote = staging_file(str(sweep.sweep_dir), sweep.name), sweep.sweep_dir / STUDY_FILE
    local.parent.mkdir(parents=True, exist_ok=True)
    if local.is_file():
        log(f"medcl: continuing from the study {local} left by an invocation that could not upload it to {remote}")
    elif storage.is_file(remote):
        local.write_bytes(storage.read_bytes(remote))
    try:
        yield
    finally:
        if local.is_file():
            storage.write_bytes(remote, local.read_bytes())
            local.unlink()


def detached(study, url: str):
    """A copy in memory of ``study`` (stored at ``url``), for a staged study whose working copy is
    removed after the upload: the caller can still list its trials."""
    import optuna

    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name=study.study_name, from_storage=url, to_storage=memory)
    return optuna.load_study(study_name=study.study_name, storage=memory)
