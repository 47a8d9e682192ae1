"""Tasks shipped to the Train workers by reference: one object per split, fetched when a stage uses it.

    light = put_tasks(tasks)          # driver, Ray initialised: every split put in the object store once
    split = light[k].split("train")   # worker: fetched now (zero-copy), held until released
    release(light, "train")           # worker: the stage is over; the split's pixels are no longer pinned

The driver used to ``ray.put`` the whole task list as one object, so every worker deserialised (and
pinned, and on a cluster every node pulled) every task's pixels for the whole run. Here each
:class:`~medcl.data.task.Split` is its own object and the tasks a worker receives carry
:class:`RemoteSplits` (the refs and sizes) instead of arrays, so the task list is a few kilobytes.
A split is fetched on first use (``ray.get``: numpy arrays come back as read-only views of the
node's object store, not copies) and held by its task until :func:`release`; the engine releases a
stage's train splits when the stage ends and each test split once it is evaluated
(:mod:`medcl.engine.loop`, :mod:`medcl.engine.evaluate`). A strategy that reads a past task's train
split (replay of exemplars) fetches it again, for the stage that reads it.

Plain :class:`Task` objects (tests, single-process harnesses) work everywhere a light one does;
:func:`release` leaves them alone.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping

from medcl.data.task import Split, Task


class RemoteSplits(Mapping):
    """A task's splits as object refs: ``splits[name]`` fetches (once) and holds the :class:`Split`.

    Contract: ``name in splits`` and ``len(splits)`` never fetch; ``sizes[name]`` is the split's
    length without fetching it; pickling carries the refs and sizes only, never held arrays."""

    def __init__(self, refs: dict, sizes: dict[str, int]):
        self.refs, self.sizes = dict(refs), dict(sizes)
        self._held: dict[str, Split] = {}

    def __getitem__(self, name: str) -> Split:
        if name not in self.refs:
            raise KeyError(name)
        if name not in self._held:
            import ray

            self._held[name] = ray.get(self.refs[name])
        return self._held[name]

    def __contains__(self, name: object) -> bool:
        return name in self.refs

    def __iter__(self) -> Iterator[str]:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def held(self) -> tuple[str, ...]:
        """The names of the splits fetched and not yet released."""
        return tuple(self._held)

    def release(self, name: str | None = None) -> None:
        """Drop the held split ``name`` (every held split when None); a later access fetches again."""
        if name is None:
            self._held.clear()
        else:
            self._held.pop(name, None)

    def __reduce__(self):
        return RemoteSplits, (self.refs, self.sizes)


def put_tasks(tasks: list[Task]) -> list[Task]:
    """Light copies of ``tasks`` (Ray initialised): each split put once, the copies holding
    :class:`RemoteSplits`; names, classes, prompts, modality and metadata are the originals'.
    The copies are not re-validated (the originals were); a task that is light already is kept
    as it is (not put twice)."""
    import ray

    light = []
    for task in tasks:
        if isinstance(task.splits, RemoteSplits):
            light.append(task)
            continue
        refs = {name: ray.put(split) for name, split in task.splits.items()}
        sizes = {name: len(split) for name, split in task.splits.items()}
        shallow = copy.copy(task)  # frozen dataclass: no __init__, so no validation fetch
        object.__setattr__(shallow, "splits", RemoteSplits(refs, sizes))
        light.append(shallow)
    return light


def split_size(task: Task, name: str) -> int:
    """Rows of ``task``'s split ``name``, without fetching a remote one."""
    splits = task.splits
    return splits.sizes[name] if isinstance(splits, RemoteSplits) else len(task.split(name))


def release(tasks: Task | Iterable[Task], name: str | None = None) -> None:
    """Release split ``name`` (all when None) of each light task in ``tasks``; plain tasks are left as they are."""
    for task in [tasks] if isinstance(tasks, Task) else tasks:
        if isinstance(task.splits, RemoteSplits):
            task.splits.release(name)
