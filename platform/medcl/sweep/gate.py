"""The gate between a sweep trial and the sequence it trains: Tune decides after every task.

A trial (:class:`medcl.sweep.trainable.SequenceTrial`) trains its sequence with a ``TorchTrainer``
started in a thread of the trial process; the worker loop (``engine.loop.train_sequence``) gets a
:class:`GateClient` as ``loop_config["gate"]`` and, after each task's checkpoint is reported, calls
``client.after_report(rank, done, checkpoint_dir)`` on every rank::

    rank 0:    (local mode: copy the checkpoint into the run directory) -> gate.reported(done)
    all ranks: gate.decision(done)  -> True: train the next task; False: return (the run ends)

The trial takes ``done`` from :meth:`TaskGate.next_report`, reports the task to Tune, and says
``decide(done, True)`` when Tune asks for the next result; when Tune stops the trial (ASHA, or the
sequence is complete) the trial says :meth:`TaskGate.stop`, the workers return from the loop, and
Ray Train ends the run normally: its worker group and placement group are removed *before* the
trial's own resources are released, so the next trial finds them free. (A Tune function trainable
stopped by Tune is killed with the Train controller it owns, and the controller's placement group,
which lives as long as the job, stays behind: the cause of issue #16.)

The gate is an async Ray actor with no CPUs, created and owned by the trial (it dies with it). Only
public Ray APIs are used.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path


class TaskGate:
    """Reports from rank 0 and the trial's decisions, one per finished task index ``done``."""

    def __init__(self):
        self._reports: asyncio.Queue = asyncio.Queue()
        self._decisions: dict[int, bool] = {}
        self._changed = asyncio.Condition()
        self._stopped = False

    async def reported(self, done: int) -> None:
        """Rank 0 has reported task ``done`` (its checkpoint is in the run directory)."""
        self._reports.put_nowait(int(done))

    async def next_report(self, timeout_s: float) -> int | None:
        """The next reported task index, or None after ``timeout_s`` without one."""
        try:
            return await asyncio.wait_for(self._reports.get(), timeout_s)
        except asyncio.TimeoutError:
            return None

    async def decide(self, done: int, go_on: bool) -> None:
        async with self._changed:
            self._decisions[int(done)] = bool(go_on)
            self._changed.notify_all()

    async def stop(self) -> None:
        """Every waiting and future :meth:`decision` answers False."""
        async with self._changed:
            self._stopped = True
            self._changed.notify_all()

    async def decision(self, done: int) -> bool:
        """Wait until the trial decides on task ``done`` (or stops); True means train on."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._stopped or int(done) in self._decisions)
            return not self._stopped and self._decisions[int(done)]


def start_gate():
    """A :class:`TaskGate` actor owned by the calling process (no CPUs, so it fits any trial)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(TaskGate).remote()


class GateClient:
    """What the worker loop holds (picklable): the gate actor and, in Ray Train local mode, where
    the run's checkpoints go (local mode keeps a reported checkpoint in memory only)."""

    def __init__(self, actor, persist_dir: str | None = None):
        self.actor, self.persist_dir = actor, persist_dir

    def after_report(self, rank: int, done: int, checkpoint_dir: Path) -> bool:
        """Called on every rank after task ``done`` was reported; True: go on to the next task."""
        import ray

        if rank == 0:
            if self.persist_dir is not None:
                _persist(checkpoint_dir, self.persist_dir, done)
            ray.get(self.actor.reported.remote(done))
        try:
            return bool(ray.get(self.actor.decision.remote(done)))
        except ray.exceptions.RayActorError:  # the trial (and its gate) is gone: stop training
            return False


def _persist(checkpoint_dir, persist_dir: str, done: int) -> None:
    """Copy a local-mode checkpoint into ``<persist_dir>/task-<done>`` (a local folder or an object store)."""
    from medcl.storage import Location, place, upload_dir

    target = place(persist_dir) / f"task-{done}"
    if isinstance(target, Location):
        upload_dir(checkpoint_dir, target)
    else:
        shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
