"""Rebuilds that keep the last good output: staging, verification, one switch, one writer at a time.

``medcl corpus build``, ``corpus embed`` and ``index build`` write through :func:`publishing`; every
reader resolves the folder it was given through :func:`resolve`. Layout of a published output folder::

    OUT/CURRENT                        the current version's name (v-...), written last, atomically
    OUT/v-20261207T120000Z-1a2b3c4d/   one complete, verified version (manifest.json or index.json ...)
    OUT/v-...                          the version before it, kept (a reader pinned to it can reload it)
    OUT/.lock                          while a build runs: its writer (host, pid, start time)
    OUT/.staging-v-.../                (local disks) the version being built

A build (``with publishing(OUT, verify=...) as stage:``) takes the lock, writes everything into
``stage``, and only when the block ends without an exception calls ``verify(stage)`` (each
manifest's sha256s), then switches:

* **local disk / shared mount**: ``OUT/.staging-v-X`` is renamed to ``OUT/v-X`` (an atomic rename in
  one folder), then ``OUT/CURRENT`` is written (temporary file + rename);
* **object store** (no rename): the version is written under its own prefix ``OUT/v-X/`` from the
  start and ``OUT/CURRENT`` (one PUT) is written last; a prefix that CURRENT does not name is never read.

Until then the previous output stays as it was. After the switch, versions other than the current
one and the version CURRENT named before the switch are removed (so an unfinished prefix a killed
object-store build left behind never displaces the last good version), with stagings of failed builds and the files of an
unversioned output (``legacy`` patterns), each checked to lie strictly below OUT
(:func:`medcl.confine.rmtree_below`). A failed build removes its own staging and changes nothing else.

Readers: :func:`resolve` gives ``OUT/<CURRENT>``, or OUT itself when there is no CURRENT (outputs
written before versioning), so a reader opens exactly one version and never a mix.

The lock: on a local disk or shared mount, ``OUT/.lock`` created with ``O_CREAT | O_EXCL``, holding
``{host, pid, started, proc_start, command}``; a lock left by a process of this host that no longer
runs (pid gone, or a pid reused by a later process: ``/proc/<pid>/stat`` start time differs) is
stale and taken over; any other is refused with :class:`OutputLocked` naming its writer. On an
``s3://`` store (when boto3 is importable) the lock object is created with a conditional PUT
(``If-None-Match: *``: exactly one writer's create succeeds), carries an expiry renewed by a
background thread every ``LEASE_S / 3`` s (``If-Match`` its own ETag), and an expired lock is taken
over with ``If-Match`` the stale ETag (exactly one taker wins). Other object stores (``gs://``...)
get a lease object with an expiry written through pyarrow and read back: it refuses a writer that
finds a live lease, but two writers starting within the same moment can both pass (no conditional
write in pyarrow's filesystem API).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator

from medcl import storage
from medcl.confine import rmtree_below
from medcl.errors import MedclError
from medcl.storage import Location, StorageError

POINTER = "CURRENT"
LOCK = ".lock"
STAGING_PREFIX = ".staging-"
VERSION_PREFIX = "v-"
LEASE_S = 300.0  # object-store lock expiry; renewed every LEASE_S / 3 while the build runs
FAULT_VARIABLE = "MEDCL_PUBLISH_FAULT"  # tests: "before_verify" or "before_switch" raises InjectedFault there


class OutputLocked(StorageError, MedclError):
    """Another writer holds the output folder's lock (the message names it)."""


def new_version() -> str:
    """``v-<UTC time>-<8 hex>``: sorts by creation time."""
    return f"{VERSION_PREFIX}{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def is_version_name(name: str) -> bool:
    return name.startswith(VERSION_PREFIX) and "/" not in name and "\\" not in name and name not in (".", "..") \
        and all(c.isalnum() or c in "-_." for c in name)


def current_version(out) -> str | None:
    """The version CURRENT names in ``out``, or None (no pointer: an unversioned or absent output)."""
    pointer = storage.place(out) / POINTER
    try:
        name = storage.read_text(pointer).strip()
    except (FileNotFoundError, OSError):
        return None
    if not is_version_name(name):
        raise StorageError(f"{pointer}: {name!r} is not a version name ({VERSION_PREFIX}...); the pointer is corrupt")
    return name


def resolve(value) -> storage.Place:
    """The folder a reader of ``value`` opens: its current version, else ``value`` itself."""
    where = storage.place(value)
    name = current_version(where)
    return where if name is None else where / name


def _fault(point: str) -> None:
    if os.environ.get(FAULT_VARIABLE) == point:
        from medcl.faults import InjectedFault

        raise InjectedFault(f"injected publish fault at {point}")


@contextlib.contextmanager
def publishing(out, *, verify: Callable[[storage.Place], None], command: str,
               legacy: Iterable[str] = ()) -> Iterator[storage.Place]:
    """Build a new version of ``out`` in the yielded staging folder and publish it (module doc).

    ``verify(stage)`` raises when the staged output is incomplete or corrupt (then nothing is
    switched); ``legacy`` are the glob patterns of an unversioned output's top-level entries,
    removed after the first switch."""
    out = storage.place(out)
    if storage.is_file(out):
        raise StorageError(f"--out {out} exists and is not a directory")
    storage.makedirs(out)
    lock = WriterLock(out, command)
    lock.acquire()
    try:
        version = new_version()
        remote = isinstance(out, Location)
        stage = out / (version if remote else f"{STAGING_PREFIX}{version}")
        storage.makedirs(stage)
        try:
            yield stage
            _fault("before_verify")
            verify(stage)
            _fault("before_switch")
            lock.check()
            previous = current_version(out)
            if not remote:
                os.rename(stage, out / version)
            storage.write_text(out / POINTER, version + "\n")
        except BaseException:
            rmtree_below(stage, out, ignore_errors=True)
            raise
        _prune(out, {version, previous} - {None}, tuple(legacy))
    finally:
        lock.release()


def _prune(out: storage.Place, kept: set[str], legacy: tuple[str, ...]) -> None:
    """Remove every version but ``kept`` (the current one and the one CURRENT named before it), failed
    stagings and ``legacy`` entries: what no reader of ``out`` resolves to any more (module doc), only
    strictly below ``out``."""
    for name in storage.listdir(out):
        if name in kept or name in (POINTER, LOCK):
            continue
        child = out / name
        if name.startswith(STAGING_PREFIX) or is_version_name(name) or any(fnmatch.fnmatch(name, p) for p in legacy):
            if storage.is_dir(child):
                rmtree_below(child, out)
            else:
                storage.delete(child)


# ---------------------------------------------------------------- the writer's lock


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(holder: dict) -> str:
    return (f"{holder.get('command', 'a medcl build')} on host {holder.get('host')!r}, pid {holder.get('pid')}, "
            f"started {holder.get('started')}")


class WriterLock:
    """One writer per output folder (module doc); ``acquire`` raises :class:`OutputLocked`."""

    def __init__(self, out, command: str, lease_s: float = LEASE_S):
        self.out, self.command, self.lease_s = storage.place(out), command, lease_s
        self.path = self.out / LOCK
        self.token = uuid.uuid4().hex
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def body(self) -> dict:
        now = time.time()
        return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                "started": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds"),
                "command": self.command, "token": self.token, "expires": now + self.lease_s}

    def acquire(self) -> None:
        if isinstance(self.out, Path):
            self._acquire_local()
        elif self.out.uri.startswith("s3://") and _boto3() is not None:
            self._acquire_s3()
        else:
            self._acquire_lease()

    def check(self) -> None:
        """OutputLocked when the lock was taken over while this writer ran (object stores)."""
        if self._lost:
            raise OutputLocked(f"{self.out}: lost the writer's lock to {self._lost}; nothing was switched")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            if isinstance(self.out, Path):
                if self._read_local().get("token") == self.token:
                    self.path.unlink(missing_ok=True)
            elif self._etag is not None:
                client, bucket, key = _s3(self.path)
                client.delete_object(Bucket=bucket, Key=key, IfMatch=self._etag)
            elif self._read_remote().get("token") == self.token:
                storage.delete(self.path)
        except Exception:  # noqa: BLE001 - a lock already taken over or gone is not ours to remove
            pass

    # local disk: O_CREAT | O_EXCL
    def _acquire_local(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_local()
                if not self._stale_local(holder):
                    raise OutputLocked(f"{self.out} is being written by {describe(holder)} (lock {self.path}); "
                                       "wait for it to finish, or remove the lock if that process is gone") from None
                self._take_stale_local(holder)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(self.body(), handle)
            return
        raise OutputLocked(f"{self.out}: could not take the lock {self.path} (other writers kept taking it)")

    def _read_local(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return {}
        except (ValueError, OSError):
            return {"host": "?", "pid": "?", "started": "?", "unreadable": True}

    @staticmethod
    def _stale_local(holder: dict) -> bool:
        if not holder:
            return True  # removed meanwhile
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False  # another host's process cannot be checked from here
        pid = holder["pid"]
        return not _pid_alive(pid) or (holder.get("proc_start") is not None
                                       and _proc_start(pid) not in (None, holder["proc_start"]))

    def _take_stale_local(self, holder: dict) -> None:
        """Move the stale lock aside, then remove it, unless it is not the one judged stale."""
        aside = self.path.with_name(f"{LOCK}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = json.loads(aside.read_text() or "{}") if aside.exists() else {}
        if moved.get("token") != holder.get("token"):  # a live writer's lock: put it back
            os.rename(aside, self.path)
            raise OutputLocked(f"{self.out} is being written by {describe(moved)} (lock {self.path})")
        aside.unlink(missing_ok=True)

    # s3: conditional create, renewed lease
    def _acquire_s3(self) -> None:
        from botocore.exceptions import ClientError

        client, bucket, key = _s3(self.path)
        try:
            self._etag = client.put_object(Bucket=bucket, Key=key, Body=json.dumps(self.body()).encode(),
                                           IfNoneMatch="*")["ETag"]
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") not in (409, 412):
                raise
            found = client.get_object(Bucket=bucket, Key=key)
            holder = json.loads(found["Body"].read() or b"{}")
            if float(holder.get("expires", 0)) > time.time():
                raise OutputLocked(f"{self.out} is being written by {describe(holder)} (lock {self.path}, "
                                   f"expires in {float(holder['expires']) - time.time():.0f} s unless renewed)") from None
            try:  # expired: exactly one taker's If-Match on the stale ETag succeeds
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=json.dumps(self.body()).encode(),
                                               IfMatch=found["ETag"])["ETag"]
            except ClientError:
                raise OutputLocked(f"{self.out}: another writer took the expired lock {self.path} first") from None
        self._thread = threading.Thread(target=self._renew_s3, name="medcl-publish-lease", daemon=True)
        self._thread.start()

    def _renew_s3(self) -> None:
        client, bucket, key = _s3(self.path)
        while not self._stop.wait(self.lease_s / 3):
            try:
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=json.dumps(self.body()).encode(),
                                               IfMatch=self._etag)["ETag"]
            except Exception as exc:  # noqa: BLE001 - taken over (412) or unreachable: refuse to switch
                self._lost = f"another writer ({type(exc).__name__})"
                return

    # other object stores: a lease object (best effort, module doc)
    def _acquire_lease(self) -> None:
        holder = self._read_remote()
        if holder and float(holder.get("expires", 0)) > time.time():
            raise OutputLocked(f"{self.out} is being written by {describe(holder)} (lease {self.path})")
        storage.write_text(self.path, json.dumps(self.body()))
        holder = self._read_remote()
        if holder.get("token") != self.token:
            raise OutputLocked(f"{self.out} is being written by {describe(holder)} (lease {self.path})")
        self._thread = threading.Thread(target=self._renew_lease, name="medcl-publish-lease", daemon=True)
        self._thread.start()

    def _renew_lease(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            holder = self._read_remote()
            if holder.get("token") != self.token:
                self._lost = describe(holder)
                return
            storage.write_text(self.path, json.dumps(self.body()))

    def _read_remote(self) -> dict:
        try:
            return json.loads(storage.read_text(self.path) or "{}")
        except (FileNotFoundError, ValueError):
            return {}


def _boto3():
    try:
        import boto3
    except ImportError:
        return None
    return boto3


def _s3(where: Location):
    """``(boto3 client, bucket, key)``; endpoint and credentials from the environment (AWS_ENDPOINT_URL...)."""
    bucket, _, key = where.uri.split("://", 1)[1].partition("/")
    return _boto3().client("s3"), bucket, key
