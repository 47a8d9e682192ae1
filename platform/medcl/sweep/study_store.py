"""Where a sweep's Optuna study lives, for every kind of ``output_dir``.

The study is read and written only by the sweep driver (the searcher asks and tells there; trials
never touch it), so it needs a database the driver reaches, not one every node sees:

* ``storage:`` set: that SQLAlchemy URL as given (``postgresql://user@host/db``, ``mysql://...``,
  or ``sqlite:////abs/path/study.db`` on the driver's disk). A database server is the choice for a
  study that must survive the driver's machine.
* ``output_dir`` local or a shared mount, no ``storage``: ``sqlite:///<output_dir>/<name>/study.db``.
* ``output_dir`` in S3 (``s3://bucket/sweeps``), no ``storage``: SQLite cannot run on an object
  store, so the study is a *working copy* on the driver's disk,
  ``$MEDCL_CACHE/sweeps/<name>-<key>/study.db`` (default ``~/.cache/medcl/sweeps/...``; ``key``
  from the sweep's URI), kept in the bucket as ``<sweep_dir>/study.db`` by :class:`ObjectStudy`:

  - one driver at a time: a lease ``<sweep_dir>/study.lease`` (:mod:`medcl.sweep.lease`) refuses a
    second driver, naming the holder and when its lease expires;
  - the copy is uploaded after every change the sweep makes (study created, trial asked, trial
    finished, pruned or failed) with a conditional PUT (``If-Match`` the ETag this driver uploaded
    last, ``If-None-Match: *`` for the first), so a driver killed mid-sweep loses at most the
    trial it was running (resumed under its own number), and a write that would overwrite
    another driver's study is refused (:class:`StudyConflict`) instead of winning silently;
  - a working copy left by a killed driver is continued only when the bucket still holds the
    version it uploaded last (``study.db.etag`` beside it); otherwise it is set aside
    (``study.db.stale-<time>``) and the bucket's study is used.

  ``gs://`` and other object stores have no conditional write here: such a sweep must give
  ``storage:`` a database URL (refused with that fix otherwise).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Iterator

from medcl.sweep.errors import SweepError

STUDY_FILE = "study.db"


def staging_file(sweep_dir_uri: str, name: str) -> Path:
    """The driver-local working copy of the study of the sweep at ``sweep_dir_uri``."""
    root = Path(os.environ.get("MEDCL_CACHE") or Path.home() / ".cache" / "medcl")
    key = hashlib.sha256(sweep_dir_uri.encode()).hexdigest()[:12]
    return root / "sweeps" / f"{name}-{key}" / STUDY_FILE


def study_url(sweep) -> str:
    """The SQLAlchemy URL Optuna opens for ``sweep`` (a :class:`~medcl.sweep.config.SweepConfig`)."""
    from medcl.redact import expand_env_refs
    from medcl.storage import Location

    if sweep.storage:  # ${NAME} references (a password kept out of files) read now, medcl.redact
        return expand_env_refs(sweep.storage, field="storage")
    if isinstance(sweep.sweep_dir, Location):
        return f"sqlite:///{staging_file(str(sweep.sweep_dir), sweep.name)}"
    return f"sqlite:///{sweep.sweep_dir / STUDY_FILE}"


def is_staged(sweep) -> bool:
    """True when the study is a working copy of ``<sweep_dir>/study.db`` in an object store."""
    from medcl.storage import Location

    return not sweep.storage and isinstance(sweep.sweep_dir, Location)


class StudyConflict(RuntimeError):
    """The bucket's study is not the version this driver uploaded last (another driver wrote it)."""


class ObjectStudy:
    """The lease, the working copy and its conditional uploads of one S3 sweep (module doc)."""

    def __init__(self, sweep, log=print):
        from medcl.sweep.lease import LEASE_FILE, Lease
        from medcl.sweep.objects import Bucket

        self.remote = str(sweep.sweep_dir / STUDY_FILE)
        self.local = staging_file(str(sweep.sweep_dir), sweep.name)
        self.bucket, self.log = Bucket(str(sweep.sweep_dir)), log
        self.lease = Lease(self.bucket, str(sweep.sweep_dir / LEASE_FILE), sweep.name)
        self.etag: str | None = None  # the bucket's version this driver uploaded or fetched last
        self.uploaded: bytes | None = None  # its content
        self.uploads = 0

    @property
    def _etag_file(self) -> Path:
        return self.local.with_name(STUDY_FILE + ".etag")

    def open(self) -> None:
        """Take the lease, then make the working copy the bucket's study (or continue one a killed
        driver of this machine left, when the bucket has not changed since it uploaded it)."""
        self.lease.acquire(self.log)
        try:
            self._fetch()
        except BaseException:
            self.lease.release()
            raise

    def _fetch(self) -> None:
        data, self.etag = self.bucket.get(self.remote)
        self.local.parent.mkdir(parents=True, exist_ok=True)
        if self.local.is_file():
            synced = self._etag_file.read_text().strip() if self._etag_file.is_file() else None
            if synced == (self.etag or ""):
                self.log(f"medcl: continuing from the study {self.local} left by an invocation that was stopped "
                         f"before uploading all of it to {self.remote}")
                return
            aside = self.local.with_name(f"{STUDY_FILE}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            self.local.replace(aside)
            self.log(f"medcl: {self.remote} changed since the working copy {self.local} was uploaded; "
                     f"using the bucket's study, the old copy is kept as {aside}")
        if data is not None:
            self.local.write_bytes(data)
        self._remember(data)

    def _remember(self, data: bytes | None) -> None:
        self.uploaded = data
        self._etag_file.write_text(self.etag or "")

    def sync(self) -> None:
        """Upload the working copy when it changed: ``If-Match`` the last ETag (a study deleted by
        ``--fresh`` is created again); :class:`StudyConflict` / ``LeaseLost`` when another driver
        wrote the study or took the lease. Called after every change the sweep makes."""
        from medcl.sweep.objects import Conflict

        self.lease.check()
        if not self.local.is_file():
            return
        data = self.local.read_bytes()
        if data == self.uploaded:
            return
        try:
            self.etag = self.bucket.put(self.remote, data, expected=self.etag)
        except Conflict:
            if self.etag is None or self.bucket.etag(self.remote) is not None:
                raise StudyConflict(f"{self.remote} was written by another driver since this one "
                                    f"({self.lease.owner}) uploaded it; not overwriting it. Resume the sweep "
                                    "with --resume once the other driver has ended") from None
            self.etag = self.bucket.put(self.remote, data, expected=None)  # deleted by --fresh: ours again
        self.uploads += 1
        self._remember(data)

    def close(self, failed: bool) -> None:
        """Upload what is left, release the lease, remove the working copy once it is uploaded."""
        try:
            self.sync()
        except Exception as exc:
            if not failed:
                raise
            self.log(f"medcl: could not upload the study to {self.remote} ({exc}); it stays in {self.local}")
            return
        finally:
            self.lease.release()
        self.local.unlink(missing_ok=True)
        self._etag_file.unlink(missing_ok=True)


class _LocalStudy:
    """Nothing to fetch or upload: the study is in its own database."""

    uploads = 0

    def sync(self) -> None:
        pass


@contextlib.contextmanager
def staged_study(sweep, log=print) -> Iterator:
    """Around one sweep invocation: for an S3 study, an open :class:`ObjectStudy` (its ``sync`` is
    called after every change), uploaded and released after, also when the block raises; for
    other studies an object whose ``sync`` does nothing. Raises ``SweepError`` when another driver
    holds the sweep or the object store has no conditional writes."""
    if not is_staged(sweep):
        yield _LocalStudy()
        return
    from medcl.sweep.lease import LeaseHeld
    from medcl.sweep.objects import ObjectsUnavailable

    try:
        store = ObjectStudy(sweep, log)
        store.open()
    except ObjectsUnavailable as exc:
        raise SweepError(f"output_dir {sweep.output_dir}: {exc}; or give storage: a database URL "
                         "(postgresql://..., mysql://...) for the study") from None
    except LeaseHeld as exc:
        raise SweepError(str(exc)) from None
    failed = True
    try:
        yield store
        failed = False
    finally:
        store.close(failed)


def detached(study, url: str):
    """A copy in memory of ``study`` (stored at ``url``), for a staged study whose working copy is
    removed after the upload: the caller can still list its trials."""
    import optuna

    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name=study.study_name, from_storage=url, to_storage=memory)
    return optuna.load_study(study_name=study.study_name, storage=memory)
