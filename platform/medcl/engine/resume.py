"""Which checkpoint a (re)started training function resumes from: one rule for sequences and pretraining.

Two records of progress exist: Ray Train's newest reported checkpoint (``ray.train.get_checkpoint()``,
set after a worker restart or on a re-run with the same storage) and the newest complete
checkpoint in the run directory. A process killed right after writing files but before Ray
recorded the report leaves Ray's record one checkpoint behind the files, and a fresh ``medcl``
invocation gets only what Ray restored from its record file (:data:`RAY_RECORD`; none once that
was set aside by :func:`drop_stale_ray_record`), so the newer of the two wins (Ray's on a tie). Ray's record is
used only when it is a valid (committed, intact) checkpoint: Ray registers a checkpoint once every
rank's files are persisted, which can be just before the ranks commit it
(:mod:`medcl.engine.checkpoint`), and a torn one may have been set aside since.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import ray.train

Restored = TypeVar("Restored")
# Ray Train V2 (2.60) keeps its record of a run's checkpoints in <storage_path>/<name>/ under this name,
# restores it when a run of the same name starts again, and refuses to start when a checkpoint it lists
# is gone (CheckpointManagerInitializationError: "running in a corrupted run directory").
RAY_RECORD = "checkpoint_manager_snapshot.json"


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


def drop_stale_ray_record(checkpoints_dir):
    """Before a TorchTrainer starts on ``checkpoints_dir`` (a local path or a Location): when Ray
    Train's record (:data:`RAY_RECORD`) lists a checkpoint directory that is gone (a torn one set
    aside, a superseded mid-task one pruned), rename the record ``<name>.stale-<UTC time>`` (kept,
    not deleted). Ray Train then starts with no record instead of refusing the run directory, and
    the workers resume from the newest valid checkpoint on disk (:func:`restore_newest`). Returns the
    new place of the record, or None when it was current or absent."""
    from medcl import storage

    record = checkpoints_dir / RAY_RECORD
    try:
        names = set(re.findall(r'"checkpoint_dir_name":\s*"([^"/\\]+)"', storage.read_text(record)))
    except (FileNotFoundError, OSError):
        return None
    missing = sorted(name for name in names if not storage.exists(checkpoints_dir / name))
    if not missing:
        return None
    target = checkpoints_dir / f"{RAY_RECORD}.stale-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    storage.move(record, target)
    print(f"medcl: Ray Train's record of {checkpoints_dir} lists checkpoints that are gone ({', '.join(missing)}: "
          f"set aside or pruned); kept as {target.name}, resuming from the checkpoints on disk",
          file=sys.stderr, flush=True)
    return target
