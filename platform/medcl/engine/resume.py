"""Which checkpoint a (re)started training function resumes from: one rule for sequences and pretraining.

Two records of progress exist: Ray Train's newest reported checkpoint (``ray.train.get_checkpoint()``,
set after a worker restart or on a re-run with the same storage) and the newest complete
checkpoint in the run directory. A process killed right after writing files but before Ray
recorded the report leaves Ray's record one checkpoint behind the files, and a fresh ``medcl``
invocation has no Ray record at all, so the newer of the two wins (Ray's on a tie). Ray's record is
used only when it is a valid (committed, intact) checkpoint: Ray registers a checkpoint once every
rank's files are persisted, which can be just before the ranks commit it
(:mod:`medcl.engine.checkpoint`), and a torn one may have been set aside since.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import ray.train

Restored = TypeVar("Restored")


def restore_newest(on_disk: Path | None, progress: Callable[[Path], int | None],
                   restore: Callable[[Path], Restored], valid: Callable[[Path], bool] = lambda _: True) -> Restored | None:
    """``restore`` the newer of Ray Train's checkpoint and ``on_disk`` (None: nothing to resume).

    ``progress(directory)`` orders checkpoints (finished stages, steps); it returns None for a
    checkpoint this rule must not pick (e.g. a mid-task checkpoint, restored by its own path).
    ``valid(place)``: whether Ray's checkpoint (its persisted place) may be used at all.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and not _valid_place(checkpoint, valid):
        checkpoint = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            reported = progress(Path(directory))
            if reported is not None and (on_disk is None or reported >= progress(on_disk)):
                return restore(Path(directory))
    return restore(on_disk) if on_disk is not None else None


def _valid_place(checkpoint, valid: Callable[[Path], bool]) -> bool:
    """``valid`` of the place Ray Train persisted ``checkpoint`` to (a local path, or the object-store
    URI of its filesystem and path); False when it is gone."""
    from medcl.storage import place

    path = checkpoint.path
    type_name = type(checkpoint.filesystem).__name__ if checkpoint.filesystem is not None else "LocalFileSystem"
    if type_name != "LocalFileSystem":
        scheme = {"S3FileSystem": "s3", "GcsFileSystem": "gs"}.get(type_name)
        if scheme is None:
            return True  # a store medcl cannot name: keep Ray's rule
        path = f"{scheme}://{path}"
    try:
        return valid(place(path))
    except (FileNotFoundError, OSError):
        return False
