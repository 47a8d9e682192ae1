"""One driver per object-store sweep: a lease object ``<sweep_dir>/study.lease``.

The lease is a JSON object ``{"owner", "host", "pid", "since", "renewed", "expires", "lease_s"}``
written with conditional PUTs (:mod:`medcl.sweep.objects`):

* acquire: create it if absent (``If-None-Match: *``); take it over (``If-Match`` its ETag) when it
  has expired, or when its holder is a process of this host that no longer exists (a killed
  driver, resumed on the same machine); otherwise refuse with :class:`LeaseHeld`, naming the holder
  and when the lease expires. Of two drivers racing for the same lease, the conditional write lets
  exactly one win.
* renew: every ``lease_s / 3`` seconds (a daemon thread) and at every study upload, ``If-Match``
  the ETag this driver wrote last; a refused renewal means another driver took the lease over
  (this one stalled past the expiry), and the next :meth:`Lease.check` raises :class:`LeaseLost`.
* release: delete it when it is still this driver's.

``lease_s`` (default 300 s, ``MEDCL_SWEEP_LEASE_S``) bounds how long a sweep whose driver's machine
was lost stays locked.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from medcl.sweep.objects import Bucket, Conflict

LEASE_FILE = "study.lease"
DEFAULT_LEASE_S = 300.0


class LeaseHeld(RuntimeError):
    """Another driver holds the sweep's lease."""


class LeaseLost(RuntimeError):
    """This driver's lease was taken over by another driver."""


def lease_seconds() -> float:
    return float(os.environ.get("MEDCL_SWEEP_LEASE_S") or DEFAULT_LEASE_S)


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def holder_text(holder: dict) -> str:
    return (f"{holder.get('owner')} (host {holder.get('host')}, pid {holder.get('pid')}, since "
            f"{_stamp(holder.get('since', 0))}, last renewed {_stamp(holder.get('renewed', 0))})")


class Lease:
    def __init__(self, bucket: Bucket, uri: str, sweep_name: str, lease_s: float | None = None):
        self.bucket, self.uri, self.sweep_name = bucket, uri, sweep_name
        self.lease_s = lease_s or lease_seconds()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.since = time.time()
        self.etag: str | None = None
        self.lost: dict | None = None
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "since": self.since,
                           "renewed": now, "expires": now + self.lease_s, "lease_s": self.lease_s}).encode()

    def acquire(self, log=print) -> None:
        """Take the lease (see the module doc) or raise :class:`LeaseHeld`."""
        data, etag = self.bucket.get(self.uri)
        holder = json.loads(data) if data else None
        if holder is not None and not self._takeable(holder):
            raise LeaseHeld(self._held_message(holder))
        try:
            self.etag = self.bucket.put(self.uri, self._body(), expected=etag)
        except Conflict:
            data, _ = self.bucket.get(self.uri)
            raise LeaseHeld(self._held_message(json.loads(data) if data else {"owner": "another driver"})) from None
        if holder is not None:
            log(f"medcl: took over the lease of sweep {self.sweep_name} from {holder_text(holder)}: "
                f"{'its process is gone' if self._dead_here(holder) else 'it expired at ' + _stamp(holder['expires'])}")
        self._thread = threading.Thread(target=self._renew_loop, name="medcl-sweep-lease", daemon=True)
        self._thread.start()

    def _takeable(self, holder: dict) -> bool:
        return float(holder.get("expires", 0)) < time.time() or self._dead_here(holder)

    @staticmethod
    def _dead_here(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def _held_message(self, holder: dict) -> str:
        expires = holder.get("expires")
        return (f"sweep {self.sweep_name} is driven by {holder_text(holder)}: its lease {self.uri} "
                f"{'expires at ' + _stamp(expires) if expires else 'is held'} unless that driver renews it "
                f"(every {float(holder.get('lease_s') or self.lease_s) / 3:g} s while it runs). Two drivers would "
                "overwrite each other's study, so this one stops. Wait for that driver to end; if it is gone "
                "(killed, machine lost), run the same command with --resume after the expiry time (the lease is then "
                "taken over; on that driver's own host it is taken over as soon as its process is gone)")

    def renew(self) -> None:
        """Renew now (``If-Match`` our last ETag); a refusal marks the lease lost."""
        with self._lock:
            if self.etag is None or self.lost is not None:
                return
            try:
                self.etag = self.bucket.put(self.uri, self._body(), expected=self.etag)
            except Conflict:
                data, _ = self.bucket.get(self.uri)
                self.lost = json.loads(data) if data else {"owner": "nobody (the lease object was deleted)"}

    def check(self) -> None:
        """Raise :class:`LeaseLost` when another driver took the lease over."""
        self.renew()
        if self.lost is not None:
            raise LeaseLost(f"sweep {self.sweep_name}: this driver ({self.owner}) lost its lease {self.uri} to "
                            f"{holder_text(self.lost)}; stopping so that two drivers do not overwrite each other's "
                            "study (this one was stalled past its lease's expiry)")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - a network error: the next renewal or upload tries again
                print(f"medcl: warning: could not renew the sweep lease {self.uri}: {exc}", flush=True)

    def release(self) -> None:
        """Stop renewing; delete the lease when it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if self.etag is not None and self.lost is None and self.bucket.etag(self.uri) == self.etag:
                self.bucket.delete(self.uri)
            self.etag = None
